package attach

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const sandboxID = "c0ffee1234567890"

// inodes maps every entry of dir to its inode and device number.
func inodes(t *testing.T, dir string) map[string][2]uint64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	must(t, err)
	out := map[string][2]uint64{}
	for _, e := range ents {
		var st unix.Stat_t
		must(t, unix.Lstat(filepath.Join(dir, e.Name()), &st))
		out[e.Name()] = [2]uint64{st.Ino, st.Rdev}
	}
	return out
}

// hostDev bind-mounts a private tmpfs at the sandbox's /dev, as
// `docker run -v /dev:/dev` does with the host's /dev, holding what a host's
// /dev holds for the test inventory: nvidia0..3, nvidiactl, nvidia-uvm. It
// is a stand-in; the real /dev is never touched. It returns the tmpfs.
func (s *sandbox) hostDev() string {
	t := s.t
	t.Helper()
	dir := t.TempDir()
	must(t, unix.Mount("hotgpu-test-dev", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=1m"))
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	inv := testInventory()
	nodes := inv.Control
	for _, g := range inv.GPUs {
		nodes = append(nodes, g.Node())
	}
	for _, n := range nodes {
		must(t, unix.Mknod(filepath.Join(dir, filepath.Base(n.Path)), unix.S_IFCHR|0o666, int(unix.Mkdev(uint32(n.Major), uint32(n.Minor)))))
	}
	dev := filepath.Join(s.root, "dev")
	must(t, unix.Mount(dir, dev, "", unix.MS_BIND, ""))
	t.Cleanup(func() { _ = unix.Unmount(dev, unix.MNT_DETACH) })
	return dir
}

// A container whose /dev is the host's (a bind mount): attach grants the
// GPU and uses the host's nodes, makes none and says so; detach revokes it
// and removes none of them.
func TestHostDevMountNodesAreNeverRemoved(t *testing.T) {
	s := newSandbox(t)
	host := s.hostDev()
	before := inodes(t, host)
	m, l := newManager(t, s, t.TempDir())

	res, err := m.Attach(Target{ContainerID: sandboxID}, []string{"1"}, 0)
	must(t, err)
	if !strings.Contains(res.Nodes, "host /dev") || !strings.Contains(res.Nodes, "will not be removed") {
		t.Errorf("attach answer says %q about nodes; want that the host's were used and will not be removed", res.Nodes)
	}
	for _, p := range []string{"/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm"} {
		if got := s.open(p); got != "ENXIO" {
			t.Errorf("after attach, open %s = %s, want ENXIO (allowed, no driver)", p, got)
		}
	}
	if g, _ := l.Lookup(res.GPUs[0].UUID); g.Nodes != "" {
		t.Errorf("grant records nodes hotgpu did not make: %s", g.Nodes)
	}

	res, err = m.Detach(Target{ContainerID: sandboxID}, nil, false)
	must(t, err)
	if after := inodes(t, host); !maps.Equal(after, before) {
		t.Fatalf("detach changed the host's /dev:\nbefore %v\nafter  %v", before, after)
	}
	if !strings.Contains(res.Nodes, "/dev/nvidia1") {
		t.Errorf("detach answer says %q about nodes; want that /dev/nvidia1 was left", res.Nodes)
	}
	if got := s.open("/dev/nvidia1"); got != "EPERM" {
		t.Errorf("after detach, open /dev/nvidia1 = %s, want EPERM", got)
	}
}

// Nor does a rollback or crash recovery remove them.
func TestHostDevMountSurvivesRollbackAndRecover(t *testing.T) {
	for _, step := range []string{"granted", "revoked", "removed"} {
		t.Run(step, func(t *testing.T) {
			s := newSandbox(t)
			host := s.hostDev()
			before := inodes(t, host)
			state := t.TempDir()
			m, _ := newManager(t, s, state)
			detach := step != "granted"
			if detach {
				_, err := m.Attach(Target{ContainerID: sandboxID}, []string{"2"}, 0)
				must(t, err)
			}
			m.SetFailpoint(func(at string) error {
				if at == step {
					if detach {
						panic("crash") // skips every rollback; Recover undoes it
					}
					return errors.New("injected")
				}
				return nil
			})
			func() {
				defer func() { _ = recover() }()
				if detach {
					_, _ = m.Detach(Target{ContainerID: sandboxID}, nil, false)
				} else if _, err := m.Attach(Target{ContainerID: sandboxID}, []string{"2"}, 0); err == nil {
					t.Fatal("attach succeeded through a failpoint")
				}
			}()
			if detach {
				restarted, _ := newManager(t, s, state)
				undone, err := restarted.Recover()
				must(t, err)
				if len(undone) != 1 {
					t.Fatalf("recover undid %v", undone)
				}
			}
			if after := inodes(t, host); !maps.Equal(after, before) {
				t.Fatalf("the host's /dev changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// Nodes the container had before the attach (its own, in its own /dev) are
// not hotgpu's: detach leaves them.
func TestDetachLeavesNodesTheContainerHad(t *testing.T) {
	s := newSandbox(t)
	for _, args := range [][]string{{"/dev/nvidia1", "195", "1"}, {"/dev/nvidiactl", "195", "255"}} {
		must(t, s.command("mknod", args[0], "c", args[1], args[2]).Run())
	}
	dev := filepath.Join(s.root, "dev")
	before := inodes(t, dev)
	m, _ := newManager(t, s, t.TempDir())
	res, err := m.Attach(Target{ContainerID: sandboxID}, []string{"1"}, 0)
	must(t, err)
	if !strings.Contains(res.Nodes, "/dev/nvidia1") || !strings.Contains(res.Nodes, "/dev/nvidiactl") {
		t.Errorf("attach answer says %q about nodes; want the two it found", res.Nodes)
	}
	_, err = m.Detach(Target{ContainerID: sandboxID}, nil, false)
	must(t, err)
	after := inodes(t, dev)
	for name, want := range before {
		if after[name] != want {
			t.Errorf("detach changed the container's own %s: %v -> %v", name, want, after[name])
		}
	}
	if _, ok := after["nvidia-uvm"]; ok {
		t.Error("detach left /dev/nvidia-uvm, which attach made")
	}
}

// A node hotgpu made and the container then replaced with its own file of
// the same name is left, by detach and by crash recovery.
func TestReplacedNodeIsNotRemoved(t *testing.T) {
	for _, crash := range []bool{false, true} {
		name := "detach"
		if crash {
			name = "recover"
		}
		t.Run(name, func(t *testing.T) {
			s := newSandbox(t)
			state := t.TempDir()
			m, _ := newManager(t, s, state)
			_, err := m.Attach(Target{ContainerID: sandboxID}, []string{"1"}, 0)
			must(t, err)
			// The container moves hotgpu's node aside (so its inode lives
			// on and cannot be reused) and makes its own in its place.
			must(t, s.command("mv", "/dev/nvidia1", "/dev/kept").Run())
			must(t, s.command("mknod", "/dev/nvidia1", "c", "195", "1").Run())
			dev := filepath.Join(s.root, "dev")
			mine := inodes(t, dev)["nvidia1"]
			if crash {
				m.SetFailpoint(func(at string) error {
					if at == "revoked" {
						panic("crash")
					}
					return nil
				})
				func() {
					defer func() { _ = recover() }()
					_, _ = m.Detach(Target{ContainerID: sandboxID}, nil, false)
				}()
				restarted, _ := newManager(t, s, state)
				_, err = restarted.Recover()
			} else {
				var res *Result
				res, err = m.Detach(Target{ContainerID: sandboxID}, nil, false)
				if err == nil && !strings.Contains(res.Nodes, "/dev/nvidia1") {
					t.Errorf("detach answer says %q about nodes; want that /dev/nvidia1 was left", res.Nodes)
				}
			}
			must(t, err)
			if got := inodes(t, dev)["nvidia1"]; got != mine {
				t.Fatalf("the container's own /dev/nvidia1 was removed or changed: %v -> %v", mine, got)
			}
			if got := s.open("/dev/nvidia1"); got != "EPERM" {
				t.Errorf("after detach, open /dev/nvidia1 = %s, want EPERM", got)
			}
		})
	}
}
