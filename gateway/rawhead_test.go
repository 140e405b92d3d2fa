package gateway

import (
	"bufio"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/valyala/fasthttp"
)

func TestAppendRawRequestHead(t *testing.T) {
	fw := forwardInfo{clientIP: netip.MustParseAddr("192.0.2.7")}
	tests := []struct {
		name  string
		block string // the client's fields
		want  string // the request to the replica; "" when the raw path does not apply
	}{
		{
			name:  "plain",
			block: "Host: a.example\r\nAccept: */*\r\nCookie: a=b\r\n",
			want: "GET /y?q=1 HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\nCookie: a=b\r\n" +
				"X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a.example\r\n\r\n",
		},
		{name: "hop-by-hop", block: "Host: a\r\nKeep-Alive: 5\r\n"},
		{name: "connection", block: "Host: a\r\nConnection: keep-alive\r\n"},
		{name: "forwarded for", block: "Host: a\r\nx-forwarded-for: 1.2.3.4\r\n"},
		{name: "forwarded host", block: "Host: a\r\nX-Forwarded-Host: b\r\n"},
		{name: "expect", block: "Host: a\r\nExpect: 100-continue\r\n"},
		{name: "two hosts", block: "Host: a\r\nHost: b\r\n"},
		{name: "bare LF", block: "Host: a\nAccept: */*\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var src fasthttp.RequestHeader
			raw := "GET /x HTTP/1.1\r\n" + tt.block + "\r\n"
			if err := src.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
				if tt.want != "" {
					t.Fatalf("read %q: %v", raw, err)
				}
				return // fasthttp refuses it: nothing is forwarded
			}
			got, ok := appendRawRequestHead(nil, &src, []byte("/y?q=1"), fw)
			if !ok {
				got = nil
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("appendRawRequestHead (-want +got):\n%s", diff)
			}
		})
	}
}
