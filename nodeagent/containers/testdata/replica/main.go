// Command replica is the containers tests' replica: an HTTP server on $PORT
// that also reports, from inside its container, what the hardening left it
// allowed to do. Built static (CGO_ENABLED=0) into a one-layer test image.
//
//	replica            serve: / hello, /report hardening JSON, /log?n=&size= write lines to stdout
//	replica forktest   start children until fork fails; print FORK_LIMITED or FORK_UNLIMITED
//	replica sleep      block forever (a forktest child)
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	mode := "serve"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "serve":
		serve()
	case "forktest":
		forktest()
	case "sleep":
		select {}
	case "exit":
		code, _ := strconv.Atoi(os.Args[2])
		os.Exit(code)
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", mode)
		os.Exit(2)
	}
}

func serve() {
	port := os.Getenv("PORT")
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s pid %d\n", host, os.Getpid())
	})
	http.HandleFunc("/report", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(makeReport())
	})
	http.HandleFunc("/log", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		tag := r.URL.Query().Get("tag")
		bw := bufio.NewWriter(os.Stdout)
		for i := range n {
			line := fmt.Sprintf("%s line %06d ", tag, i)
			if pad := size - len(line) - 1; pad > 0 {
				line += strings.Repeat("x", pad)
			}
			bw.WriteString(line + "\n")
		}
		bw.Flush()
		fmt.Fprintln(w, "ok")
	})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Println("got SIGTERM, exiting")
		os.Exit(0)
	}()
	fmt.Printf("listening on :%s\n", port)
	if err := http.ListenAndServe(":"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// Report is what the replica finds it may do. Error fields hold "" for
// success, else the error text.
type Report struct {
	UID, GID   int
	Groups     []int
	Status     map[string]string // CapInh, CapPrm, CapEff, CapBnd, CapAmb, NoNewPrivs, Seccomp
	Hostname   string
	Env        map[string]string
	WriteRoot  string // create /probe: the root dir is root's, so EACCES
	WriteData  string // create /data/probe: /data is 0777 in the image, so only a read-only rootfs refuses
	WriteTmp   string // create /tmp/probe: the tmpfs
	TmpSize    uint64 // bytes of the /tmp filesystem
	RootMount  string // the options of / in mountinfo
	Setuid     string // setuid(0)
	Keyctl     string // keyctl(KEYCTL_GET_KEYRING_ID): denied by the default seccomp profile
	Mount      string // mount a tmpfs: needs CAP_SYS_ADMIN
	Chown      string // chown /tmp/probe to root: needs CAP_CHOWN
	ResolvConf string
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func makeReport() Report {
	rep := Report{UID: os.Getuid(), GID: os.Getgid(), Status: map[string]string{}, Env: map[string]string{}}
	rep.Groups, _ = os.Getgroups()
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch k {
			case "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp":
				rep.Status[k] = strings.TrimSpace(v)
			}
		}
	}
	rep.Hostname, _ = os.Hostname()
	for _, e := range os.Environ() {
		k, v, _ := strings.Cut(e, "=")
		rep.Env[k] = v
	}
	rep.WriteRoot = errText(os.WriteFile("/probe", []byte("x"), 0o644))
	rep.WriteData = errText(os.WriteFile("/data/probe", []byte("x"), 0o644))
	rep.WriteTmp = errText(os.WriteFile("/tmp/probe", []byte("x"), 0o644))
	var st syscall.Statfs_t
	if err := syscall.Statfs("/tmp", &st); err == nil {
		rep.TmpSize = st.Blocks * uint64(st.Bsize)
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 5 && f[4] == "/" {
				rep.RootMount = f[5]
			}
		}
	}
	rep.Setuid = errText(syscall.Setuid(0))
	const keyctlGetKeyringID, keySpecSessionKeyring = 0, -3
	if _, _, errno := syscall.Syscall(syscall.SYS_KEYCTL, keyctlGetKeyringID, uintptr(keySpecSessionKeyring&0xffffffff), 0); errno != 0 {
		rep.Keyctl = errno.Error()
	}
	os.MkdirAll("/tmp/mnt", 0o755)
	rep.Mount = errText(syscall.Mount("tmpfs", "/tmp/mnt", "tmpfs", 0, ""))
	rep.Chown = errText(os.Chown("/tmp/probe", 0, 0))
	b, _ := os.ReadFile("/etc/resolv.conf")
	rep.ResolvConf = string(b)
	return rep
}

// forktest starts children (this binary, sleeping) until starting one
// fails, which the pids cgroup limit makes happen. The children die with
// the container: they are in its pid namespace, whose init is this process.
func forktest() {
	self, err := os.Executable()
	if err != nil {
		self = "/app"
	}
	for i := range 1000 {
		cmd := exec.Command(self, "sleep")
		if err := cmd.Start(); err != nil {
			var errno syscall.Errno
			errors.As(err, &errno)
			fmt.Printf("FORK_LIMITED after %d children: %v (errno %d)\n", i, err, int(errno))
			os.Exit(0)
		}
	}
	fmt.Println("FORK_UNLIMITED: started 1000 children")
	os.Exit(1)
}
