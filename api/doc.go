// Package api holds the objects every Surge role exchanges: Functions,
// Revisions, Traffic, Scales, Replicas and Nodes, their validation, and the
// error body the API server answers with.
//
// The objects follow Kubernetes' shape (metadata, spec, status) so that a
// reader who knows kubectl knows where to look. They are kept in etcd by the
// control plane; ObjectMeta.ResourceVersion is the etcd mod revision of the
// key and drives optimistic concurrency and watch resumption.
//
// Durations and resource quantities are strings on the wire ("30s", "250m",
// "128Mi") so that a bad value is reported with the name of its field; the
// Parse* helpers in this package turn them into numbers.
package api
