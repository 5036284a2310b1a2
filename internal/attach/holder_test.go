package attach

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// holderEnv makes the test binary a GPU holder: "open" holds PATH with
// O_PATH (the one open that works on a node without a driver), "send" opens
// it and passes the fd over the socket at fd 3 (SCM_RIGHTS) and exits,
// "recv" holds the fd it receives there. A holder says "ready" and keeps
// what it holds until its stdin closes.
const holderEnv = "HOTGPU_ATTACH_TEST_HOLDER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(holderEnv); mode != "" {
		if err := runHolder(mode, os.Getenv("HOLDER_PATH")); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runHolder(mode, path string) error {
	sock := 3
	switch mode {
	case "open":
		if _, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0); err != nil {
			return err
		}
	case "send":
		fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		return unix.Sendmsg(sock, []byte("x"), unix.UnixRights(fd), nil, 0)
	case "recv":
		oob := make([]byte, unix.CmsgSpace(4))
		_, oobn, _, _, err := unix.Recvmsg(sock, make([]byte, 1), oob, 0)
		if err != nil {
			return err
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			return fmt.Errorf("no fd received: %v", err)
		}
		if _, err := unix.ParseUnixRights(&msgs[0]); err != nil {
			return err
		}
		_ = unix.Close(sock)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// holder is a running holder process; stop ends it.
type holder struct {
	cmd *exec.Cmd
	in  io.WriteCloser
}

func (h *holder) pid() int { return h.cmd.Process.Pid }

func (h *holder) stop() {
	_ = h.in.Close()
	_ = h.cmd.Wait()
}

// startHolder runs an "open" holder of path in cgroup (a cgroup.procs
// file; "" for the test's own) and waits until it holds it.
func startHolder(t *testing.T, path, cgroup string) *holder {
	t.Helper()
	cmd := exec.Command("sh", "-c", `[ -z "$1" ] || echo $$ > "$1" && exec "$0" -test.run='^$'`, os.Args[0], cgroup)
	cmd.Env = []string{holderEnv + "=open", "HOLDER_PATH=" + path}
	in, err := cmd.StdinPipe()
	must(t, err)
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	h := &holder{cmd: cmd, in: in}
	t.Cleanup(func() { _ = cmd.Process.Kill(); h.stop() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("holder of %s: %q, %v", path, line, err)
	}
	return h
}

// passedFdHolder makes a process of the container open path and pass the fd
// to a process outside it (SCM_RIGHTS), then exit: only the outside process
// holds the node.
func passedFdHolder(t *testing.T, s *sandbox, path string) *holder {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	must(t, err)
	a, b := os.NewFile(uintptr(fds[0]), "send"), os.NewFile(uintptr(fds[1]), "recv")
	defer a.Close()
	defer b.Close()
	recv := startHolderAsync(t, b)
	procs := filepath.Join(devicesRoot, s.cgroup, "cgroup.procs")
	send := exec.Command("sh", "-c", `echo $$ > "$1" && exec "$0" -test.run='^$'`, os.Args[0], procs)
	send.Env = []string{holderEnv + "=send", "HOLDER_PATH=" + path}
	send.ExtraFiles = []*os.File{a}
	if out, err := send.CombinedOutput(); err != nil {
		t.Fatalf("sender in the container: %v: %s", err, out)
	}
	return recv()
}

// startHolderAsync starts a "recv" holder on sock and returns a function
// that waits until it holds what it was sent.
func startHolderAsync(t *testing.T, sock *os.File) func() *holder {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = []string{holderEnv + "=recv"}
	cmd.ExtraFiles = []*os.File{sock}
	in, err := cmd.StdinPipe()
	must(t, err)
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	h := &holder{cmd: cmd, in: in}
	t.Cleanup(func() { _ = cmd.Process.Kill(); h.stop() })
	return func() *holder {
		line, err := bufio.NewReader(out).ReadString('\n')
		if strings.TrimSpace(line) != "ready" {
			t.Fatalf("receiving holder: %q, %v", line, err)
		}
		return h
	}
}
