package gateway

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// epoller is a poller on an epoll instance of its own, beside the Go
// runtime's: a descriptor may be in several. Each is watched one-shot, so
// an event comes once, and a wait is ended by an eventfd in the set.
//
// The instance is waited on through the runtime's poller, as a file (an
// epoll descriptor is readable while it holds events), never in a
// blocking epoll_wait: that would hold the process's only P for as long
// as it waits when the gateway runs on one core (GOMAXPROCS 1), until
// sysmon took it back — milliseconds of stalled requests each time.
type epoller struct {
	epfd, wakefd int
	file         *os.File // epfd, for the runtime's poller
	raw          syscall.RawConn
	events       []unix.EpollEvent // wait's, on run's goroutine
	// State of one wait, for its callback.
	fds   []int
	err   error
	ready func(fd uintptr) bool
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
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wakefd)
		return nil, fmt.Errorf("epoll nonblocking: %w", err)
	}
	e := &epoller{epfd: epfd, wakefd: wakefd, events: make([]unix.EpollEvent, 256)}
	e.file = os.NewFile(uintptr(epfd), "gateway-parking-epoll")
	if e.raw, err = e.file.SyscallConn(); err != nil {
		_ = e.file.Close()
		_ = unix.Close(wakefd)
		return nil, fmt.Errorf("epoll file: %w", err)
	}
	e.ready = e.collect // bound once
	return e, nil
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
	e.fds, e.err = fds, nil
	_ = e.file.SetReadDeadline(time.Now().Add(d))
	err := e.raw.Read(e.ready)
	fds, werr := e.fds, e.err
	e.fds, e.err = nil, nil
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fds, nil
	case err != nil:
		return fds, fmt.Errorf("epoll wait: %w", err)
	case werr != nil:
		return fds, fmt.Errorf("epoll wait: %w", werr)
	}
	return fds, nil
}

// collect is wait's RawConn.Read callback: it takes the events the set
// holds, without blocking, and asks the runtime to wait for more when
// there are none.
func (e *epoller) collect(fd uintptr) bool {
	n, err := unix.EpollWait(int(fd), e.events, 0)
	switch {
	case errors.Is(err, unix.EINTR):
		return false
	case err != nil:
		e.err = err
		return true
	case n == 0:
		return false
	}
	for _, ev := range e.events[:n] {
		if int(ev.Fd) == e.wakefd {
			var b [8]byte
			_, _ = unix.Read(e.wakefd, b[:])
			continue
		}
		e.fds = append(e.fds, int(ev.Fd))
	}
	return true
}

func (e *epoller) wake() {
	b := [8]byte{1}
	_, _ = unix.Write(e.wakefd, b[:])
}

func (e *epoller) close() {
	_ = e.file.Close()
	_ = unix.Close(e.wakefd)
}
