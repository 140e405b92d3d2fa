package store

import (
	"fmt"
	"strings"

	"github.com/surgeplatform/surge/api"
)

// The store's layout of objects in etcd. The kinds themselves (name,
// plural, namespaced) are api.Kind; what the store adds is where their
// objects live:
//
//	/surge/v1/PLURAL/NAMESPACE/[FUNCTION/]NAME
//
// Objects that belong to one function (revisions, scales, replicas) carry
// the function in their key, so that deleting a function removes all of
// them with one range delete each, in the same transaction. Existing data
// depends on this layout: a change to it needs a migration.

// Prefix under which every Surge key lives.
const Prefix = "/surge/v1/"

// functionOf derives the owning function from an object's name, for the
// kinds keyed under their function.
var functionOf = map[api.Kind]func(name string) (string, bool){
	api.RevisionKind: functionOfRevision,
	api.ScaleKind:    functionOfRevision,
	api.ReplicaKind:  functionOfReplica,
}

func functionOfRevision(name string) (string, bool) {
	fn, _, ok := api.ParseRevisionName(name)
	return fn, ok
}

// functionOfReplica reads "hello-00001-x7k2p" as function "hello".
func functionOfReplica(name string) (string, bool) {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return "", false
	}
	return functionOfRevision(name[:i])
}

// GroupedByFunction reports whether objects of kind k are keyed under
// their function, so that a Scope may name one.
func GroupedByFunction(k api.Kind) bool { return functionOf[k] != nil }

// EtcdKey is where the object of kind k named by key lives. ok is false
// when the name cannot belong to the kind (a revision name without its
// number, say); such an object does not exist.
func EtcdKey(k api.Kind, key api.Key) (etcdKey string, ok bool) {
	p := kindPrefix(k, key.Namespace)
	if fnOf := functionOf[k]; fnOf != nil {
		fn, ok := fnOf(key.Name)
		if !ok {
			return "", false
		}
		p += fn + "/"
	}
	return p + key.Name, true
}

// kindPrefix is the key prefix of k's objects in a namespace; an empty
// namespace means every namespace.
func kindPrefix(k api.Kind, namespace string) string {
	p := Prefix + k.Plural + "/"
	if k.Namespaced && namespace != "" {
		p += namespace + "/"
	}
	return p
}

// Scope selects the objects of a kind that List and Watch read: the zero
// Scope is all of them, a Namespace those of one namespace, and a
// Namespace with a Function, for kinds grouped by function (see
// GroupedByFunction), those of one function.
type Scope struct {
	Namespace string
	Function  string
}

// prefix is the key prefix of the objects of kind k in the scope.
func (sc Scope) prefix(k api.Kind) (string, error) {
	if sc.Function == "" {
		return kindPrefix(k, sc.Namespace), nil
	}
	if !GroupedByFunction(k) || sc.Namespace == "" {
		return "", fmt.Errorf("objects of function %q: %s are not keyed by function within a namespace", sc.Function, k.Plural)
	}
	return kindPrefix(k, sc.Namespace) + sc.Function + "/", nil
}

// StatsPrefix holds the gateways' latest load reports, one key per gateway.
const StatsPrefix = Prefix + "stats/"
