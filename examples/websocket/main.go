// Command websocket is a Surge function that echoes WebSocket messages
// (RFC 6455): each text or binary message sent to GET / comes back as it
// was. The gateway tunnels the upgraded connection to the replica.
package main

import (
	"log"
	"net/http"

	"github.com/gorilla/websocket"

	"github.com/surgeplatform/surge/examples/internal/serve"
)

func main() { serve.Run("websocket", newHandler()) }

func newHandler() http.Handler {
	// Any origin: the example is meant to be called from anywhere; a real
	// function that trusts cookies checks the Origin.
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			http.Error(w, "connect with a WebSocket client: every message comes back", http.StatusUpgradeRequired)
			return
		}
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return // Upgrade answered the client
		}
		defer conn.Close()
		conn.SetReadLimit(1 << 20)
		for {
			kind, msg, err := conn.ReadMessage()
			if err != nil {
				if !websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
					log.Printf("websocket: read: %v", err)
				}
				return
			}
			if err := conn.WriteMessage(kind, msg); err != nil {
				return
			}
		}
	})
	return mux
}
