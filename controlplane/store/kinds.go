package store

import (
	"strings"

	"github.com/surgeplatform/surge/api"
)

// Kind says how objects of one kind are laid out in etcd.
//
// Keys are /surge/v1/PLURAL/NAMESPACE/[FUNCTION/]NAME. Objects that belong to
// one function (revisions, scales, replicas) carry the function in their key,
// so that deleting a function removes all of them with one range delete
// each, in the same transaction.
type Kind struct {
	// Name is the kind as it appears in objects, e.g. "Function".
	Name string
	// Plural is the path segment, e.g. "functions".
	Plural string
	// Namespaced kinds live in a namespace; Nodes do not.
	Namespaced bool
	// function derives the owning function from an object's name, for kinds
	// grouped under one; nil for the others.
	function func(name string) (string, bool)
}

// Kinds known to the store.
var (
	Functions = Kind{Name: api.KindFunction, Plural: "functions", Namespaced: true}
	Revisions = Kind{Name: api.KindRevision, Plural: "revisions", Namespaced: true, function: functionOfRevision}
	Traffics  = Kind{Name: api.KindTraffic, Plural: "traffic", Namespaced: true}
	Scales    = Kind{Name: api.KindScale, Plural: "scales", Namespaced: true, function: functionOfRevision}
	Replicas  = Kind{Name: api.KindReplica, Plural: "replicas", Namespaced: true, function: functionOfReplica}
	Nodes     = Kind{Name: api.KindNode, Plural: "nodes"}
)

// Prefix under which every Surge key lives.
const Prefix = "/surge/v1/"

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

// Key is where the named object lives. ok is false when the name cannot
// belong to this kind (a revision name without its number, say); such an
// object does not exist.
func (k Kind) Key(namespace, name string) (key string, ok bool) {
	p := k.Prefix(namespace)
	if k.function != nil {
		fn, ok := k.function(name)
		if !ok {
			return "", false
		}
		p += fn + "/"
	}
	return p + name, true
}

// Prefix is the key prefix of the kind's objects in a namespace; an empty
// namespace means every namespace.
func (k Kind) Prefix(namespace string) string {
	p := Prefix + k.Plural + "/"
	if k.Namespaced && namespace != "" {
		p += namespace + "/"
	}
	return p
}

// FunctionPrefix is the key prefix of the kind's objects that belong to one
// function. Only kinds grouped by function have one.
func (k Kind) FunctionPrefix(namespace, function string) string {
	return k.Prefix(namespace) + function + "/"
}

// GroupedByFunction reports whether the kind's objects are keyed under
// their function, so that FunctionPrefix applies.
func (k Kind) GroupedByFunction() bool { return k.function != nil }

// StatsPrefix holds the gateways' latest load reports, one key per gateway.
const StatsPrefix = Prefix + "stats/"
