//go:build !linux

package gateway

import "errors"

// newPoller has no poller to give outside Linux: connections are never
// parked there.
func newPoller() (poller, error) {
	return nil, errors.New("no epoll on this system")
}
