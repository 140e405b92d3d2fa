package api

// Kind describes one kind of API object: the name its objects carry, the
// path segment of its collection (/v1/namespaces/NS/PLURAL/NAME), and
// whether its objects live in a namespace. The client derives paths from
// it, the store its keys and the API server its routes, so a plural is
// written once.
type Kind struct {
	// Name is the kind as objects carry it, e.g. "Function".
	Name string
	// Plural is the collection's path segment, e.g. "functions".
	Plural string
	// Namespaced kinds live in a namespace; Nodes do not.
	Namespaced bool
}

// The kinds of object.
var (
	FunctionKind = Kind{Name: KindFunction, Plural: "functions", Namespaced: true}
	RevisionKind = Kind{Name: KindRevision, Plural: "revisions", Namespaced: true}
	TrafficKind  = Kind{Name: KindTraffic, Plural: "traffic", Namespaced: true}
	ScaleKind    = Kind{Name: KindScale, Plural: "scales", Namespaced: true}
	ReplicaKind  = Kind{Name: KindReplica, Plural: "replicas", Namespaced: true}
	NodeKind     = Kind{Name: KindNode, Plural: "nodes"}
	// PullSecretKind is a private registry's credentials.
	PullSecretKind = Kind{Name: KindPullSecret, Plural: "pullsecrets", Namespaced: true}
)

// ObjectKind implements Object.
func (*Function) ObjectKind() Kind { return FunctionKind }

// ObjectKind implements Object.
func (*Revision) ObjectKind() Kind { return RevisionKind }

// ObjectKind implements Object.
func (*Traffic) ObjectKind() Kind { return TrafficKind }

// ObjectKind implements Object.
func (*Scale) ObjectKind() Kind { return ScaleKind }

// ObjectKind implements Object.
func (*Replica) ObjectKind() Kind { return ReplicaKind }

// ObjectKind implements Object.
func (*Node) ObjectKind() Kind { return NodeKind }

// ObjectKind implements Object.
func (*PullSecret) ObjectKind() Kind { return PullSecretKind }

// ObjectPtr is the constraint of generic code over object types: *T is
// an Object. With it a caller names only the type, e.g.
// client.Get[api.Function](ctx, c, key), and the kind follows.
type ObjectPtr[T any] interface {
	*T
	Object
}

// KindOf returns the kind of the object type T.
func KindOf[T any, P ObjectPtr[T]]() Kind {
	var zero T
	return P(&zero).ObjectKind()
}

// Key names one object: its namespace (empty for kinds without one, such
// as Node) and its name. It is comparable, so maps are keyed by it.
type Key struct {
	Namespace string
	Name      string
}

// KeyOf returns an object's key.
func KeyOf(o Object) Key {
	m := o.GetMetadata()
	return Key{Namespace: m.Namespace, Name: m.Name}
}

// String is "NAMESPACE/NAME", or "NAME" without a namespace.
func (k Key) String() string {
	if k.Namespace == "" {
		return k.Name
	}
	return k.Namespace + "/" + k.Name
}
