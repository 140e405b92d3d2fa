package api

// ClusterStatus is the control plane as GET /v1/cluster shows it: its
// servers, which of them leads the controllers, and etcd's members.
type ClusterStatus struct {
	// Servers are the servers running now, by name.
	Servers []ServerInfo `json:"servers"`
	// Leader names the server that runs the controllers and the
	// autoscaler ("" while none does).
	Leader string `json:"leader,omitempty"`
	// EtcdLeader names the etcd member that leads raft ("" for an
	// external etcd, or while there is none).
	EtcdLeader string `json:"etcdLeader,omitempty"`
	// Members are the embedded etcd's members, started or not.
	Members []EtcdMember `json:"members,omitempty"`
}

// ServerInfo is what a running server says of itself.
type ServerInfo struct {
	// Name is the server's name, its etcd member's.
	Name string `json:"name"`
	// APIURL is where the server's API and registry answer.
	APIURL string `json:"apiURL"`
	// Version is the server's build; APIVersion the API it serves.
	Version    string `json:"version"`
	APIVersion string `json:"apiVersion"`
	// MemberID is its embedded etcd member's id (hex), "" on an external
	// etcd.
	MemberID string `json:"memberID,omitempty"`
	// MetricsURL is where the server's metrics are scraped: the API's
	// /metrics (a token that may read metrics), or, in surge up, the one
	// address that serves every role's.
	MetricsURL string `json:"metricsURL,omitempty"`
}

// EtcdMember is one member of the embedded etcd cluster.
type EtcdMember struct {
	Name     string   `json:"name"`
	ID       string   `json:"id"`
	PeerURLs []string `json:"peerURLs"`
	// Learner is a member that copies the log but does not vote yet (a
	// server joining).
	Learner bool `json:"learner,omitempty"`
}

// JoinRequest is what a server sends to join a cluster
// (POST /v1/cluster/members).
type JoinRequest struct {
	// Name is the joining server's member name.
	Name string `json:"name"`
	// PeerURL is where its embedded etcd takes peer traffic; "" on an
	// external etcd, where no member is added.
	PeerURL string `json:"peerURL,omitempty"`
	// APIVersion is the API the joining server serves: a cluster refuses
	// a server of another.
	APIVersion string `json:"apiVersion"`
	// Version is the joining server's build, for the log.
	Version string `json:"version,omitempty"`
}

// JoinResponse hands a joining server what every server of the cluster
// shares: the files of the data directory that hold the CA, its key and
// the tokens, and where the etcd members are.
type JoinResponse struct {
	// Files maps a path relative to the data directory to its content.
	Files map[string]string `json:"files"`
	// AdminToken is the cluster's admin token, for the joining server's
	// admin client config.
	AdminToken string `json:"adminToken"`
	// InitialCluster lists every etcd member, the joining one included,
	// as NAME=PEER_URL,… (etcd's --initial-cluster); "" on an external
	// etcd.
	InitialCluster string `json:"initialCluster,omitempty"`
}
