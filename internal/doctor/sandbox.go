package doctor

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SandboxArg is the hidden subcommand that runs SandboxMain: the attach
// test re-executes the running binary with it.
const SandboxArg = "doctor-sandbox"

// sandbox is a throwaway stand-in for a container, made without a runtime:
// a child process in its own mount namespace, chrooted into a private tmpfs
// with an empty /dev, in a fresh device cgroup that denies every device but
// /dev/null (runc's base, minus the other namespaces). hotgpud takes it for
// a container: its root is not the host's.
type sandbox struct {
	name   string // hotgpu-doctor-<pid>: its cgroup's and root's name
	root   string // on the host: the tmpfs mount point, in the child's namespace only
	cgroup string // the cgroup directory
	v2     bool
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
}

// startSandbox starts argv[0] argv[1:]... SandboxArg ROOT in a new sandbox
// under cgroupRoot, its cgroup and root named after name.
func startSandbox(argv []string, cgroupRoot, name string) (s *sandbox, err error) {
	s = &sandbox{name: name}
	if s.root, err = os.MkdirTemp("", s.name+"-root-"); err != nil {
		return nil, fmt.Errorf("failed to make the sandbox's root: %w", err)
	}
	defer func() {
		if err != nil {
			_ = s.close()
		}
	}()
	if err = s.makeCgroup(cgroupRoot); err != nil {
		return s, err
	}
	s.cmd = exec.Command(argv[0], append(argv[1:], SandboxArg, s.root)...)
	// Go's exec remounts / recursively private after unshare(CLONE_NEWNS):
	// nothing the child mounts reaches the host.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	s.cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	s.cmd.Stderr = os.Stderr
	if s.in, err = s.cmd.StdinPipe(); err != nil {
		return s, err
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return s, err
	}
	s.out = bufio.NewReader(stdout)
	if err = s.cmd.Start(); err != nil {
		s.cmd = nil
		return s, fmt.Errorf("failed to start the sandbox process: %w", err)
	}
	if err = os.WriteFile(filepath.Join(s.cgroup, "cgroup.procs"), []byte(strconv.Itoa(s.cmd.Process.Pid)), 0); err != nil {
		return s, fmt.Errorf("failed to move the sandbox into cgroup %s: %w", s.cgroup, err)
	}
	if reply, err := s.do("setup"); err != nil || reply != "ok" {
		return s, fmt.Errorf("failed to set up the sandbox's root: %v%s", err, reply)
	}
	return s, nil
}

// makeCgroup makes the sandbox's cgroup: in the v1 devices hierarchy when
// the host has one (with runc's base rules), else in cgroup2.
func (s *sandbox) makeCgroup(root string) error {
	devices := filepath.Join(root, "devices")
	if isFS(devices, cgroupV1Magic) {
		s.cgroup = filepath.Join(devices, s.name)
		if err := os.Mkdir(s.cgroup, 0o755); err != nil {
			s.cgroup = ""
			return fmt.Errorf("failed to make the sandbox's cgroup: %w", err)
		}
		rules := []struct{ file, rule string }{{"devices.deny", "a"}, {"devices.allow", "c *:* m"}, {"devices.allow", "b *:* m"}, {"devices.allow", "c 1:3 rwm"}}
		for _, r := range rules {
			if err := os.WriteFile(filepath.Join(s.cgroup, r.file), []byte(r.rule), 0); err != nil {
				return fmt.Errorf("failed to write %s to %s: %w", r.rule, r.file, err)
			}
		}
		return nil
	}
	if !isFS(root, cgroupV2Magic) {
		return fmt.Errorf("%s has neither a cgroup v1 devices hierarchy nor cgroup2", root)
	}
	s.v2, s.cgroup = true, filepath.Join(root, s.name)
	if err := os.Mkdir(s.cgroup, 0o755); err != nil {
		s.cgroup = ""
		return fmt.Errorf("failed to make the sandbox's cgroup: %w", err)
	}
	return nil
}

func (s *sandbox) pid() int { return s.cmd.Process.Pid }

// do sends one command to the sandbox and returns its one-line answer.
func (s *sandbox) do(cmd string) (string, error) {
	if _, err := fmt.Fprintln(s.in, cmd); err != nil {
		return "", fmt.Errorf("the sandbox process is gone: %w", err)
	}
	line, err := s.out.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("the sandbox process did not answer %q: %w", cmd, err)
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// open says what opening path gives inside the sandbox: ok or an errno's
// name (ENXIO, EPERM, ENOENT, ...).
func (s *sandbox) open(path string) string {
	reply, err := s.do("open " + path)
	if err != nil {
		return err.Error()
	}
	return reply
}

// mknod makes a character device node inside the sandbox (its own tmpfs).
func (s *sandbox) mknod(path string, major, minor int64) error {
	reply, err := s.do(fmt.Sprintf("mknod %s %d %d", path, major, minor))
	if err == nil && reply != "ok" {
		err = errors.New(reply)
	}
	return err
}

// close ends the sandbox and removes everything it made: the process (its
// mount namespace and tmpfs go with it), the cgroup, the root directory.
func (s *sandbox) close() error {
	var errs []error
	if s.cmd != nil {
		_ = s.in.Close()
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
	if s.cgroup != "" {
		errs = append(errs, removeCgroup(s.cgroup))
	}
	if err := os.Remove(s.root); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("failed to remove the sandbox's root %s: %w", s.root, err))
	}
	return errors.Join(errs...)
}

// removeCgroup removes dir once the killed process has left it: the
// kernel moves a dead task out a moment after wait returns.
func removeCgroup(dir string) error {
	var err error
	for range 100 {
		if err = os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("failed to remove the sandbox's cgroup %s: %w", dir, err)
}

// SandboxMain is the sandbox process: args is its root. It answers one
// line per command read from in: setup (mount a private tmpfs on the
// root with an empty /dev, chroot into it), open PATH, mknod PATH MAJOR
// MINOR. It returns its exit code when in closes.
func SandboxMain(args []string, in io.Reader, out io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: hotgpu "+SandboxArg+" ROOT (run by hotgpu doctor --attach-test)")
		return 2
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var err error
		switch {
		case len(f) == 1 && f[0] == "setup":
			err = setupRoot(args[0])
		case len(f) == 2 && f[0] == "open":
			err = openOnce(f[1])
		case len(f) == 4 && f[0] == "mknod":
			err = mknod(f[1], f[2], f[3])
		default:
			err = fmt.Errorf("unknown command %q", sc.Text())
		}
		fmt.Fprintln(out, reply(err))
	}
	return 0
}

func reply(err error) string {
	var errno syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &errno):
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

func setupRoot(root string) error {
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=1m"); err != nil {
		return fmt.Errorf("mount tmpfs: %w", err)
	}
	if err := os.Mkdir(filepath.Join(root, "dev"), 0o755); err != nil {
		return err
	}
	if err := unix.Chroot(root); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}

func openOnce(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func mknod(path, major, minor string) error {
	ma, err1 := strconv.ParseUint(major, 10, 32)
	mi, err2 := strconv.ParseUint(minor, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	return unix.Mknod(path, unix.S_IFCHR|0o666, int(unix.Mkdev(uint32(ma), uint32(mi))))
}
