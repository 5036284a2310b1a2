package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/hotgpu/hotgpu/internal/alloc"
	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

type fakeBackend struct {
	attached []attach.Target
	err      error
}

func (f *fakeBackend) Attach(t attach.Target, ids []string, count int) (*attach.Result, error) {
	if f.err != nil {
		return nil, f.err
	}
	f.attached = append(f.attached, t)
	return &attach.Result{Holder: ledger.Holder{ContainerID: "c1"}, GPUs: []gpu.GPU{{Index: 1}}}, nil
}

func (f *fakeBackend) Detach(t attach.Target, ids []string, force bool) (*attach.Result, error) {
	return nil, fmt.Errorf("%w: GPU 1 is open", attach.ErrBusy)
}
func (f *fakeBackend) GPUs() []api.GPUStatus {
	return []api.GPUStatus{{GPU: gpu.GPU{Index: 0}, Healthy: true}}
}
func (f *fakeBackend) Status() api.Status { return api.Status{GPUs: 8} }

func serve(t *testing.T, b Backend) (string, *api.Client) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv, err := NewServer(path, "", b, logrus.NewEntry(log))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return path, api.NewClient(path)
}

func TestSocketIsPrivate(t *testing.T) {
	path, _ := serve(t, &fakeBackend{})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestRequests(t *testing.T) {
	b := &fakeBackend{}
	_, c := serve(t, b)
	ctx := context.Background()
	tests := []struct {
		name    string
		req     api.AttachRequest
		wantErr string
	}{
		{"ok", api.AttachRequest{Target: attach.Target{ContainerID: "abc"}, Count: 1}, ""},
		{"no target", api.AttachRequest{Count: 1}, "exactly one target"},
		{"two targets", api.AttachRequest{Target: attach.Target{ContainerID: "a", PID: 3}, Count: 1}, "exactly one target"},
		{"pod without namespace", api.AttachRequest{Target: attach.Target{PodName: "p"}, Count: 1}, "namespace"},
		{"ids and count", api.AttachRequest{Target: attach.Target{PID: 9}, Count: 1, IDs: []string{"0"}}, "either GPU ids or a count"},
		{"path as id", api.AttachRequest{Target: attach.Target{PID: 9}, IDs: []string{"../../dev/sda"}}, "not a GPU index or UUID"},
		{"huge count", api.AttachRequest{Target: attach.Target{PID: 9}, Count: 1000}, "count must be between"},
		{"path as container id", api.AttachRequest{Target: attach.Target{ContainerID: "../../etc"}, Count: 1}, "invalid container id"},
		{"container id with a newline", api.AttachRequest{Target: attach.Target{ContainerID: "a\nlevel=error"}, Count: 1}, "invalid container id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := c.Attach(ctx, tt.req)
			if tt.wantErr == "" {
				if err != nil || res.GPUs[0].Index != 1 {
					t.Fatalf("res %+v err %v", res, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if len(b.attached) != 1 {
		t.Fatalf("backend saw %d attach calls, want only the valid one", len(b.attached))
	}
	var se *api.StatusError
	if _, err := c.Detach(ctx, api.DetachRequest{Target: attach.Target{PID: 5}, All: true}); !errors.As(err, &se) || se.Code != 409 || !strings.Contains(err.Error(), "is open") {
		t.Fatalf("detach err = %v, want a 409 saying the GPU is open", err)
	}
	if st, err := c.Status(ctx); err != nil || st.GPUs != 8 {
		t.Fatalf("status %+v %v", st, err)
	}
	b.err = errors.New("boom")
	if _, err := c.Attach(ctx, tests[0].req); !errors.As(err, &se) || se.Code != 422 || err.Error() != "boom" {
		t.Fatalf("backend error not passed on: %v", err)
	}
}

// A caller that is not root is refused by its kernel credentials even when
// the socket file itself is opened up.
func TestNonRootRefused(t *testing.T) {
	if os.Getenv("HOTGPU_API_CLIENT") != "" {
		_, err := api.NewClient(os.Getenv("HOTGPU_API_CLIENT")).Status(context.Background())
		fmt.Print(err)
		os.Exit(0)
	}
	testenv.RequireRoot(t, "runs a client as another user")
	path, _ := serve(t, &fakeBackend{})
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	out := runClientAs(t, path, &syscall.Credential{Uid: 65534, Gid: 65534})
	if !strings.Contains(out, "the hotgpu API is for root") {
		t.Fatalf("non-root caller got %q, want permission denied", out)
	}
}

// TestGroupMembersAllowed: with an API group configured, a caller is let in
// whether that group is its primary group or a supplementary one (as for a
// user added to the group with usermod -aG), and refused otherwise.
func TestGroupMembersAllowed(t *testing.T) {
	testenv.RequireRoot(t, "runs a client as another user")
	group, gid := existingGroup(t)
	path := filepath.Join(t.TempDir(), "api.sock")
	log := logrus.New()
	log.SetOutput(io.Discard)
	srv, err := NewServer(path, group, &fakeBackend{}, logrus.NewEntry(log))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	// World-connectable, so that the server's check is what decides.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cred syscall.Credential
		want string
	}{
		{"primary group", syscall.Credential{Uid: 65534, Gid: gid}, "<nil>"},
		{"supplementary group", syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{65533, gid}}, "<nil>"},
		{"other groups", syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{65533}}, "the hotgpu API is for root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if out := runClientAs(t, path, &tt.cred); !strings.Contains(out, tt.want) {
				t.Fatalf("caller gid %d groups %v in API group %s (%d): got %q, want %q", tt.cred.Gid, tt.cred.Groups, group, gid, out, tt.want)
			}
		})
	}
}

// existingGroup returns a group of this host that is neither root's nor
// nobody's, to configure as the API group.
func existingGroup(t *testing.T) (string, uint32) {
	t.Helper()
	for _, name := range []string{"adm", "sys", "daemon", "users", "staff"} {
		g, err := user.LookupGroup(name)
		if err != nil {
			continue
		}
		gid, err := strconv.ParseUint(g.Gid, 10, 32)
		if err == nil && gid != 0 && gid < 65533 {
			return name, uint32(gid)
		}
	}
	testenv.Skip(t, "needs a group such as adm or users in /etc/group")
	return "", 0
}

// runClientAs runs this test binary as cred, as a client asking the server
// at path for its status, and returns what it printed: "<nil>" when let in.
func runClientAs(t *testing.T, path string, cred *syscall.Credential) string {
	t.Helper()
	if err := os.Chmod(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	// The test binary lives in a private build dir: run a copy anyone can read.
	bin := filepath.Join(t.TempDir(), "api.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, bin} {
		for d := filepath.Dir(p); d != filepath.Dir(d); d = filepath.Dir(d) {
			if strings.HasPrefix(d, os.TempDir()+"/") {
				_ = os.Chmod(d, 0o755)
			}
		}
	}
	cmd := exec.Command(bin, "-test.run=^TestNonRootRefused$")
	cmd.Env = append(os.Environ(), "HOTGPU_API_CLIENT="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	if err != nil {
		testenv.Skipf(t, "cannot run the test binary as uid %d here: %v %s", cred.Uid, err, out)
	}
	return string(out)
}

// TestProcGroups reads the fallback for kernels without SO_PEERGROUPS.
func TestProcGroups(t *testing.T) {
	got, err := procGroups("/proc/self/status")
	want, werr := os.Getgroups()
	if err != nil || werr != nil || len(got) != len(want) {
		t.Fatalf("procGroups = %v, %v; os.Getgroups = %v, %v", got, err, want, werr)
	}
	for i := range want {
		if got[i] != uint32(want[i]) {
			t.Fatalf("procGroups = %v, want %v", got, want)
		}
	}
	dir := t.TempDir()
	for name, status := range map[string]string{"none": "Name:\tx\n", "bad": "Groups:\t4 x\n"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(status), 0o644); err != nil {
			t.Fatal(err)
		}
		if gids, err := procGroups(p); err == nil {
			t.Errorf("%s: got %v, want an error", name, gids)
		}
	}
}

// Refusals are classified by what they are, not by their wording.
func TestStatusCodes(t *testing.T) {
	inv := &gpu.Inventory{GPUs: []gpu.GPU{{Index: 0, UUID: "GPU-a"}}}
	_, heldErr := alloc.Choose(inv, held{}, []string{"0"}, 0)
	_, fullErr := alloc.Choose(inv, held{}, nil, 1)
	_, missingErr := inv.Lookup("7")
	for _, tc := range []struct {
		err  error
		code int
	}{
		{heldErr, 409}, {fullErr, 409}, {fmt.Errorf("%w: x", attach.ErrNotFound), 404}, {missingErr, 422},
	} {
		b := &fakeBackend{err: tc.err}
		_, c := serve(t, b)
		var se *api.StatusError
		if _, err := c.Attach(context.Background(), api.AttachRequest{Target: attach.Target{PID: 9}, Count: 1}); !errors.As(err, &se) || se.Code != tc.code || se.Msg != tc.err.Error() {
			t.Errorf("%v: got %v, want %d with the same message", tc.err, err, tc.code)
		}
	}
}

// held is an alloc.Availability where every GPU is held.
type held struct{}

func (held) HeldBy(string) string { return "someone (attach)" }
func (held) Healthy(string) bool  { return true }
