package harness

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// shimSocketDir is where containerd v2 shims put their sockets, whatever the
// state dir (pkg/shim SocketAddress); a killed shim leaves its socket there.
const shimSocketDir = "/run/containerd/s"

// Cleanup removes everything the instance made: pods and ctr containers
// (gracefully while containerd runs), then by force any process left in its
// cgroups, its shims and their sockets, its mounts, its cgroups and its dir.
// It is safe to call more than once.
func (c *Containerd) Cleanup() error {
	c.cleanOnce.Do(func() { c.cleanErr = c.cleanup() })
	return c.cleanErr
}

func (c *Containerd) cleanup() error {
	if c.Running() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c.removeAll(ctx)
		cancel()
	}
	errs := []error{c.Stop()}
	if c.cri != nil {
		errs = append(errs, c.cri.Close())
	}
	errs = append(errs, killCgroupProcs(c.CgroupParent), killShims(c.Address))
	errs = append(errs, unmountUnder(c.Dir), removeCgroups(c.CgroupParent))
	if err := os.RemoveAll(c.Dir); err != nil {
		errs = append(errs, fmt.Errorf("failed to remove %s: %w", c.Dir, err))
	}
	return errors.Join(errs...)
}

// removeAll stops and removes every pod and ctr container, best effort: what
// it misses is killed by force afterwards.
func (c *Containerd) removeAll(ctx context.Context) {
	if pods, err := c.cri.ListPods(ctx); err == nil {
		for _, id := range pods {
			_ = c.cri.StopPod(ctx, id)
			_ = c.cri.RemovePod(ctx, id)
		}
	}
	c.mu.Lock()
	namespaces := make([]string, 0, len(c.ctrNS))
	for ns := range c.ctrNS {
		namespaces = append(namespaces, ns)
	}
	c.mu.Unlock()
	for _, ns := range namespaces {
		res, err := c.Ctr(ctx, ns, "containers", "ls", "-q")
		if err != nil {
			continue
		}
		for _, id := range strings.Fields(res.Stdout) {
			_, _ = c.Ctr(ctx, ns, "tasks", "rm", "-f", id)
			_, _ = c.Ctr(ctx, ns, "containers", "rm", id)
		}
	}
}

// cgroupMounts returns the mount points of every cgroup v1 hierarchy and of
// the cgroup2 hierarchy, keyed by controller ("" for cgroup2, "name=systemd"
// for named hierarchies).
func cgroupMounts() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("failed to read mountinfo: %w", err)
	}
	mounts := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		fields, postFields := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(postFields) < 3 {
			continue
		}
		switch postFields[0] {
		case "cgroup2":
			mounts[""] = unescapeMount(fields[4])
		case "cgroup":
			for _, opt := range strings.Split(postFields[2], ",") {
				if opt != "rw" && opt != "ro" && !strings.Contains(opt, "time") {
					mounts[opt] = unescapeMount(fields[4])
				}
			}
		}
	}
	return mounts, nil
}

// cgroupDirs lists, for every hierarchy, the instance's cgroup dir and all
// below it, deepest first.
func cgroupDirs(parent string) []string {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var dirs []string
	for _, mnt := range mounts {
		root := filepath.Join(mnt, parent)
		if seen[root] {
			continue
		}
		seen[root] = true
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	return dirs
}

// killCgroupProcs SIGKILLs every process in the instance's cgroups until none is left.
func killCgroupProcs(parent string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for _, d := range cgroupDirs(parent) {
			b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					n++
				}
			}
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes in cgroup %s survive SIGKILL", n, parent)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removeCgroups removes the instance's cgroups, deepest first; a cgroup is
// busy for a moment after its last process died.
func removeCgroups(parent string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var errs []error
		for _, d := range cgroupDirs(parent) {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("failed to remove cgroup %s: %w", d, err))
			}
		}
		if len(errs) == 0 || time.Now().After(deadline) {
			return errors.Join(errs...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killShims kills the shims serving containerd at address and removes their
// sockets, which a killed shim cannot.
func killShims(address string) error {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var errs []error
	var killed []int
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), "containerd-shim") {
			continue
		}
		args := map[string]string{}
		argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		for i := 0; i+1 < len(argv); i++ {
			args[argv[i]] = argv[i+1]
		}
		if args["-address"] != address {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("failed to kill shim %d: %w", pid, err))
		}
		killed = append(killed, pid)
		sum := sha256.Sum256([]byte(filepath.Join(address, args["-namespace"], args["-id"])))
		_ = os.Remove(filepath.Join(shimSocketDir, fmt.Sprintf("%x", sum)))
	}
	return errors.Join(append(errs, waitGone(killed, 5*time.Second))...)
}

// waitGone waits until none of pids is alive (zombies count as gone: init,
// not we, reaps re-parented shims).
func waitGone(pids []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("process %d survives SIGKILL", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// unmountUnder detaches every mount below dir (rootfs overlays, sandbox shm),
// deepest first.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("failed to read mountinfo: %w", err)
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 {
			if p := unescapeMount(fields[4]); strings.HasPrefix(p, dir+"/") {
				points = append(points, p)
			}
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("failed to unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				out.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		out.WriteByte(s[i])
	}
	return out.String()
}

// UnmountUnder detaches every mount below dir, deepest first (for the
// cluster package: kubelet's pod volumes).
func UnmountUnder(dir string) error { return unmountUnder(dir) }
