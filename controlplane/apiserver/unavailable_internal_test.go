package apiserver

import (
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/raft/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestEtcdUnavailable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("deploy function a: %w", rpctypes.ErrLeaderChanged), true},
		{fmt.Errorf("create node b: %w", rpctypes.ErrTimeout), true},
		{fmt.Errorf("create node b: %w", status.Error(codes.Unknown, raft.ErrProposalDropped.Error())), true},
		{raft.ErrProposalDropped, true},
		{fmt.Errorf("list: %w", rpctypes.ErrNoLeader), true},
		{fmt.Errorf("list: %w", rpctypes.ErrKeyNotFound), false},
		{errors.New("disk full"), false},
	} {
		if got := etcdUnavailable(tc.err); got != tc.want {
			t.Errorf("etcdUnavailable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
