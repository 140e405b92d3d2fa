package controlplanetest

import (
	"context"
	"crypto/tls"
	"net/http"

	"github.com/surgeplatform/surge/client"
)

// JoinClient returns a client that sends the cluster's join token: it
// may only bootstrap nodes (client.Bootstrap).
func (in *Instance) JoinClient() *client.Client {
	in.t.Helper()
	return in.ClientWithToken(in.server.JoinToken())
}

// NodeClient joins node at address (an address of this machine, such as
// 127.0.0.1) with the join token, as a node agent does, and returns a
// client that authenticates with the node's certificate, and the
// certificate.
func (in *Instance) NodeClient(node, address string) (*client.Client, tls.Certificate) {
	in.t.Helper()
	join := in.JoinClient()
	defer closeIdle(join)
	cert, err := client.Bootstrap(context.Background(), join, node, address)
	if err != nil {
		in.t.Fatalf("join node %s: %v", node, err)
	}
	c, err := client.NewWithCertificate(in.AdminConfig(), func() *tls.Certificate { return &cert })
	if err != nil {
		in.t.Fatalf("node client: %v", err)
	}
	in.t.Cleanup(func() { closeIdle(c) })
	return c, cert
}

// closeIdle lets a client's idle connections go.
func closeIdle(c *client.Client) {
	if t, ok := c.Transport().(*http.Transport); ok {
		t.CloseIdleConnections()
	}
}
