package store

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/surgeplatform/surge/api"
)

// subnetPrefix holds one key per allocated node subnet, naming its node.
// Creating the key and the node in one transaction is what keeps two nodes
// registering at once from getting the same subnet.
const subnetPrefix = Prefix + "subnets/"

// ErrNoSubnet is returned when the pod CIDR has no free node subnet left.
var ErrNoSubnet = api.NewError(507, "InsufficientStorage", "no free node subnet left in the pod CIDR: widen --pod-cidr")

// CreateNode registers a node and gives it the lowest free /bits subnet of
// podCIDR (unless its spec names one already).
func (s *Store) CreateNode(ctx context.Context, n *api.Node, podCIDR netip.Prefix, bits int) (*api.Node, error) {
	s.stampNew(n)
	key, _ := EtcdKey(api.NodeKind, api.Key{Name: n.Metadata.Name})
	for {
		resp, err := s.c.Get(ctx, subnetPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return nil, fmt.Errorf("create node %s: %w", n.Metadata.Name, err)
		}
		taken := make(map[string]bool, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			taken[string(kv.Key[len(subnetPrefix):])] = true
		}
		subnet, err := freeSubnet(podCIDR, bits, taken)
		if err != nil {
			// A node registering again (its agent restarted) has a subnet
			// already: tell it so, even when none is left for a new one.
			if r, gerr := s.c.Get(ctx, key, clientv3.WithCountOnly()); gerr == nil && r.Count > 0 {
				return nil, alreadyExists(api.NodeKind, n.Metadata.Name)
			}
			return nil, err
		}
		n.Spec.PodSubnet = subnet
		val, err := encode(n)
		if err != nil {
			return nil, err
		}
		skey := subnetPrefix + subnetKey(subnet)
		tr, err := s.c.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(skey), "=", 0),
		).Then(clientv3.OpPut(key, val), clientv3.OpPut(skey, n.Metadata.Name)).
			Else(clientv3.OpGet(key)).Commit()
		if err != nil {
			return nil, fmt.Errorf("create node %s: %w", n.Metadata.Name, err)
		}
		if tr.Succeeded {
			n.Metadata.ResourceVersion = strconv.FormatInt(tr.Header.Revision, 10)
			n.Kind = api.KindNode
			return n, nil
		}
		if len(tr.Responses[0].GetResponseRange().Kvs) > 0 {
			return nil, alreadyExists(api.NodeKind, n.Metadata.Name)
		}
		// Another node took that subnet in between: pick again.
	}
}

// DeleteNode removes a node and frees its subnet.
func (s *Store) DeleteNode(ctx context.Context, name, resourceVersion string) error {
	n, err := Get[api.Node](ctx, s, api.Key{Name: name})
	if err != nil {
		return err
	}
	if err := Delete[api.Node](ctx, s, api.Key{Name: name}, resourceVersion); err != nil {
		return err
	}
	if n.Spec.PodSubnet != "" {
		if _, err := s.c.Delete(ctx, subnetPrefix+subnetKey(n.Spec.PodSubnet)); err != nil {
			return fmt.Errorf("free subnet of node %s: %w", name, err)
		}
	}
	return s.deleteNodeLease(ctx, name)
}

func subnetKey(cidr string) string {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return cidr
	}
	return p.Addr().String() + "_" + strconv.Itoa(p.Bits())
}

// freeSubnet returns the lowest /bits subnet of cidr not in taken (keyed by
// subnetKey).
func freeSubnet(cidr netip.Prefix, bits int, taken map[string]bool) (string, error) {
	if bits < cidr.Bits() || bits > 30 {
		return "", fmt.Errorf("node subnet /%d does not fit pod CIDR %s", bits, cidr)
	}
	count := 1 << (bits - cidr.Bits())
	step := 1 << (32 - bits)
	base := cidr.Masked().Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	for i := range count {
		a := start + uint32(i*step)
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), bits)
		if !taken[subnetKey(p.String())] {
			return p.String(), nil
		}
	}
	return "", ErrNoSubnet
}
