package gateway

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestLazyDeadlinesFireWhenAsked(t *testing.T) {
	tests := []struct {
		name     string
		set      []time.Duration // read deadlines set in turn, from now; 0 is none
		wantMin  time.Duration   // the read fails no sooner
		wantMax  time.Duration   // and no later
		wantData bool            // the peer's late write is read instead
	}{
		{name: "moved later", set: []time.Duration{30 * time.Millisecond, 150 * time.Millisecond}, wantMin: 150 * time.Millisecond, wantMax: 5 * time.Second},
		{name: "moved earlier", set: []time.Duration{time.Hour, 30 * time.Millisecond}, wantMin: 30 * time.Millisecond, wantMax: 5 * time.Second},
		{name: "removed", set: []time.Duration{30 * time.Millisecond, 0}, wantData: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := tcpPair(t)
			sig := &deadlineSignal{Conn: server, fired: make(chan struct{})}
			if tt.wantData {
				server = sig // to write once the first deadline fired
			}
			c := newClientConn(server)
			start := time.Now()
			for _, d := range tt.set {
				var at time.Time
				if d > 0 {
					at = start.Add(d)
				}
				if err := c.SetReadDeadline(at); err != nil {
					t.Fatal(err)
				}
			}
			if tt.wantData {
				go func() {
					// Past the first deadline, which the read must outlive;
					// the failsafe only keeps a broken read from hanging.
					select {
					case <-sig.fired:
					case <-time.After(5 * time.Second):
					}
					_, _ = client.Write([]byte("x"))
				}()
			}
			n, err := c.Read(make([]byte, 1))
			took := time.Since(start)
			if tt.wantData {
				if n != 1 || err != nil {
					t.Fatalf("Read = %d, %v; want the peer's byte", n, err)
				}
				return
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Read = %d, %v; want a deadline error", n, err)
			}
			if took < tt.wantMin || took > tt.wantMax {
				t.Errorf("the deadline fired after %v, want %v to %v", took, tt.wantMin, tt.wantMax)
			}
		})
	}
}

// deadlineSignal closes fired when a Read first fails on a deadline.
type deadlineSignal struct {
	net.Conn
	once  sync.Once
	fired chan struct{}
}

func (c *deadlineSignal) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.once.Do(func() { close(c.fired) })
	}
	return n, err
}

func TestClientConnHeldAnswer(t *testing.T) {
	t.Run("written by the next read", func(t *testing.T) {
		client, server := tcpPair(t)
		c := newClientConn(server)
		holdAnswer(c)
		if _, err := c.Write([]byte("answer")); err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 1)
		go func() {
			b := make([]byte, 6)
			_, _ = io.ReadFull(client, b)
			got <- string(b)
			_, _ = client.Write([]byte("next"))
		}()
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "next" {
			t.Fatalf("Read = %q, %v; want the next request", b, err)
		}
		if s := <-got; s != "answer" {
			t.Fatalf("client got %q", s)
		}
	})
	t.Run("written by close", func(t *testing.T) {
		client, server := tcpPair(t)
		c := newClientConn(server)
		holdAnswer(c)
		if _, err := c.Write([]byte("last")); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(client)
		if err != nil || string(b) != "last" {
			t.Fatalf("client got %q, %v; want the last answer", b, err)
		}
	})
}
