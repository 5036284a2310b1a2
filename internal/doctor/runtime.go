package doctor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/api"
)

const runtimeStep step = StepRuntime

// daemonReloadDoc is where the systemd driver's daemon-reload problem is
// described.
const daemonReloadDoc = "README.md, 'Running containers: live attach and detach'"

// runtimeChecks: containerd's NRI and CDI as hotgpud sees them (st is nil
// when hotgpud is not reachable), then the cgroups containers run in.
func runtimeChecks(st *api.Status, cgroupRoot string) []Check {
	var out []Check
	switch {
	case st == nil:
		out = append(out, runtimeStep.skip("nri", "hotgpud is not reachable (see the hotgpud step)"))
	case st.NRIConnected:
		out = append(out, runtimeStep.ok("nri", "hotgpud is connected to containerd's NRI: pods get GPUs by annotation and allocation"))
	default:
		out = append(out, runtimeStep.warn("nri", "hotgpud is not connected to containerd's NRI: pods get GPUs only through CDI and the device plugin's CDI names, and live attach finds pods only by --pid",
			"enable NRI in containerd (config v3: [plugins.'io.containerd.nri.v1.nri'] disable = false) and restart containerd; hotgpud reconnects by itself"))
	}
	if st != nil && st.CDISpec != "" {
		dir := filepath.Dir(st.CDISpec)
		where := dir + " in cdi_spec_dirs"
		if dir == "/var/run/cdi" || dir == "/etc/cdi" {
			where += " (its defaults)"
		} else {
			where += " (not a default: add it)"
		}
		out = append(out, runtimeStep.ok("cdi", fmt.Sprintf("hotgpud writes %s: containerd reads it with enable_cdi = true and %s", st.CDISpec, where)))
	} else if st != nil {
		out = append(out, runtimeStep.warn("cdi", "hotgpud reports no CDI spec written", "see hotgpud's log ('journalctl -u hotgpud') for why it could not write it"))
	}
	return append(out, cgroupChecks(cgroupRoot)...)
}

// cgroupChecks report the cgroup version and the cgroup driver containers
// run under, and whether a live grant survives systemd's daemon-reload.
func cgroupChecks(root string) []Check {
	version, devicesDir := cgroupVersion(root)
	out := []Check{runtimeStep.ok("cgroups", version)}
	drv, why := cgroupDriver(devicesDir)
	switch drv {
	case "systemd":
		out = append(out, runtimeStep.ok("cgroup driver", "systemd ("+why+")"),
			runtimeStep.warn("daemon-reload", "under the systemd cgroup driver 'systemctl daemon-reload' re-applies each scope's DeviceAllow=, which does not yet list GPUs hotgpu attached live: they are revoked until hotgpud's next reconcile re-grants them",
				"avoid daemon-reload on nodes with live-attached GPUs, or keep hotgpud's reconcile interval short; see "+daemonReloadDoc))
	case "cgroupfs":
		out = append(out, runtimeStep.ok("cgroup driver", "cgroupfs ("+why+"): no systemd unit re-applies device rules, live grants stay"))
	default:
		out = append(out, runtimeStep.ok("cgroup driver", "unknown: "+why))
	}
	return out
}

// cgroupVersion names the hierarchy layout and returns the directory that
// holds the containers' device cgroups.
func cgroupVersion(root string) (version, devicesDir string) {
	if isFS(root, cgroupV2Magic) {
		return "v2 (unified at " + root + "): device access is an eBPF program per cgroup", root
	}
	devices := filepath.Join(root, "devices")
	switch {
	case isFS(filepath.Join(root, "unified"), cgroupV2Magic):
		return "v1 with a cgroup2 hierarchy at " + filepath.Join(root, "unified") + " (hybrid): device access is " + devices + "/*/devices.allow", devices
	case isFS(devices, cgroupV1Magic):
		return "v1: device access is " + devices + "/*/devices.allow", devices
	}
	return "unknown: " + root + " is neither cgroup2 nor holds a v1 devices hierarchy (is /sys/fs/cgroup mounted?)", root
}

func isFS(path string, magic int64) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && int64(st.Type) == magic
}

// cgroupDriver tells systemd from cgroupfs by where containers' cgroups
// are: scopes under kubepods.slice or system.slice (systemd) or plain
// directories (kubepods, containerd's k8s.io and default namespaces).
func cgroupDriver(dir string) (driver, why string) {
	exists := func(p string) bool { _, err := os.Stat(filepath.Join(dir, p)); return err == nil }
	switch {
	case exists("kubepods.slice"):
		return "systemd", "pods are under " + filepath.Join(dir, "kubepods.slice")
	case containerScopes(filepath.Join(dir, "system.slice")) != "":
		return "systemd", "containers are scopes such as " + containerScopes(filepath.Join(dir, "system.slice"))
	case exists("kubepods"):
		return "cgroupfs", "pods are under " + filepath.Join(dir, "kubepods")
	case exists("k8s.io"), exists("default"):
		return "cgroupfs", "containers are under " + dir + "/<namespace>"
	}
	init, _ := os.ReadFile("/proc/1/comm")
	return "", fmt.Sprintf("no container cgroups under %s yet (the host's init is %s)", dir, strings.TrimSpace(string(init)))
}

// containerScopes returns one container scope of dir, "" when none.
func containerScopes(dir string) string {
	for _, prefix := range []string{"cri-containerd-", "docker-", "crio-"} {
		if m, _ := filepath.Glob(filepath.Join(dir, prefix+"*.scope")); len(m) > 0 {
			return filepath.Base(m[0])
		}
	}
	return ""
}

// The file system types of cgroup hierarchies.
const (
	cgroupV1Magic = unix.CGROUP_SUPER_MAGIC
	cgroupV2Magic = unix.CGROUP2_SUPER_MAGIC
)
