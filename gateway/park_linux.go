package gateway

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// epoller is a poller on an epoll instance of its own, beside the Go
// runtime's: a descriptor may be in several. Each is watched one-shot, so
// an event comes once, and woken by an eventfd.
type epoller struct {
	epfd, wakefd int
	events       []unix.EpollEvent // wait's, on run's goroutine
}

func newPoller() (poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll create: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wakefd)
		return nil, fmt.Errorf("epoll add eventfd: %w", err)
	}
	return &epoller{epfd: epfd, wakefd: wakefd, events: make([]unix.EpollEvent, 256)}, nil
}

func (e *epoller) add(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd)}
	err := unix.EpollCtl(e.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
	if errors.Is(err, unix.EEXIST) { // parked before: its one-shot is spent
		err = unix.EpollCtl(e.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
	}
	if err != nil {
		return fmt.Errorf("epoll add %d: %w", fd, err)
	}
	return nil
}

func (e *epoller) del(fd int) { _ = unix.EpollCtl(e.epfd, unix.EPOLL_CTL_DEL, fd, nil) }

func (e *epoller) wait(fds []int, d time.Duration) ([]int, error) {
	msec := int(min(d.Milliseconds(), 1<<30))
	for {
		n, err := unix.EpollWait(e.epfd, e.events, msec)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fds, fmt.Errorf("epoll wait: %w", err)
		}
		for _, ev := range e.events[:n] {
			if int(ev.Fd) == e.wakefd {
				var b [8]byte
				_, _ = unix.Read(e.wakefd, b[:])
				continue
			}
			fds = append(fds, int(ev.Fd))
		}
		return fds, nil
	}
}

func (e *epoller) wake() {
	b := [8]byte{1}
	_, _ = unix.Write(e.wakefd, b[:])
}

func (e *epoller) close() {
	_ = unix.Close(e.epfd)
	_ = unix.Close(e.wakefd)
}
