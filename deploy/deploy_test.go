// Package deploy holds the Kubernetes manifests; its tests decode them with
// the Kubernetes API types (strictly: an unknown or misplaced field fails)
// and check the properties the README promises, and check the Dockerfile.
package deploy

import (
	"bytes"
	"os"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	resourcev1 "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	configv1 "github.com/hotgpu/hotgpu/api/config/v1"
)

// objects decodes every document of every manifest in this directory.
func objects(t *testing.T) []runtime.Object {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, rbacv1.AddToScheme, admissionv1.AddToScheme, resourcev1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	dec := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	files, _ := pathGlob("*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests in deploy/")
	}
	var out []runtime.Object
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufioReader(data))
		for i := 0; ; i++ {
			doc, err := r.Read()
			if err != nil {
				break
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, _, err := dec.Decode(doc, nil, nil)
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			out = append(out, obj)
		}
	}
	return out
}

func daemonSet(t *testing.T, objs []runtime.Object) *appsv1.DaemonSet {
	t.Helper()
	var found []*appsv1.DaemonSet
	for _, o := range objs {
		if ds, ok := o.(*appsv1.DaemonSet); ok {
			found = append(found, ds)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one DaemonSet, found %d", len(found))
	}
	return found[0]
}

func TestManifestsDecodeStrictly(t *testing.T) {
	kinds := map[string]bool{}
	for _, o := range objects(t) {
		kinds[o.GetObjectKind().GroupVersionKind().Kind] = true
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"} {
		if !kinds[k] {
			t.Errorf("no %s in deploy/", k)
		}
	}
}

func TestDaemonSetLeastPrivilege(t *testing.T) {
	objs := objects(t)
	ds := daemonSet(t, objs)
	pod := ds.Spec.Template.Spec
	if pod.NodeSelector["nvidia.com/gpu.present"] != "true" {
		t.Errorf("nodeSelector = %v, want nvidia.com/gpu.present=true", pod.NodeSelector)
	}
	if pod.HostNetwork || pod.HostIPC || !pod.HostPID {
		t.Errorf("hostNetwork=%t hostIPC=%t hostPID=%t: want only hostPID", pod.HostNetwork, pod.HostIPC, pod.HostPID)
	}
	if pod.AutomountServiceAccountToken == nil || !*pod.AutomountServiceAccountToken {
		t.Error("hotgpud is the GPUAttachment node agent: its bound token must be mounted")
	}
	checkAgentRole(t, objs, pod.ServiceAccountName)
	justified := strings.Split(ds.Spec.Template.Annotations["hotgpu.dev/privileged-containers"], ",")
	why := ds.Spec.Template.Annotations["hotgpu.dev/privileged-why"]
	for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s has no securityContext", c.Name)
			continue
		}
		if sc.Privileged != nil && *sc.Privileged && (!slices.Contains(justified, c.Name) || len(why) < 100) {
			t.Errorf("container %s is privileged without a justification in hotgpu.dev/privileged-why", c.Name)
		}
		privileged := sc.Privileged != nil && *sc.Privileged
		if !privileged && (sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation) {
			t.Errorf("unprivileged container %s must drop ALL capabilities and not allow privilege escalation", c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("container %s: want readOnlyRootFilesystem", c.Name)
		}
		if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("container %s: want memory requests and limits", c.Name)
		}
	}
}

func TestProbesAndConfig(t *testing.T) {
	objs := objects(t)
	ds := daemonSet(t, objs)
	var cfg *configv1.Config
	for _, o := range objs {
		if cm, ok := o.(*corev1.ConfigMap); ok && cm.Data["hotgpud.yaml"] != "" {
			c, err := configv1.Parse([]byte(cm.Data["hotgpud.yaml"]))
			if err != nil {
				t.Fatalf("ConfigMap %s: hotgpud.yaml: %v", cm.Name, err)
			}
			cfg = c
		}
	}
	if cfg == nil {
		t.Fatal("no ConfigMap with hotgpud.yaml")
	}
	c := container(t, ds, "hotgpud")
	port := portOf(t, c, "metrics")
	if !strings.HasSuffix(cfg.Metrics.Address, ":"+itoa(port)) {
		t.Errorf("metrics.address %q does not match container port %d", cfg.Metrics.Address, port)
	}
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port.String() != "metrics" {
			t.Errorf("%s probe = %+v, want GET /healthz on the metrics port", name, p)
		}
	}
	// Every path the config names must be mounted at the same place.
	mounts := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = true
	}
	for key, p := range map[string]string{"nri.socket": path.Dir(cfg.NRI.Socket), "cdi.dir": cfg.CDI.Dir,
		"api.socket": path.Dir(cfg.API.Socket), "stateDir": cfg.StateDir, "devicePlugin.kubeletDir": cfg.DevicePlugin.KubeletDir,
		"driverRoot": cfg.DriverRoot} {
		if !mounts[p] {
			t.Errorf("config %s needs %s mounted in hotgpud", key, p)
		}
	}
	install := container(t, ds, "install-hook")
	if dir := path.Dir(cfg.HookPath); !slices.Contains(install.Command, dir) {
		t.Errorf("install-hook installs into %v, but hookPath is %s", install.Command, cfg.HookPath)
	}
}

// TestHostPathsDocumented keeps the manifest's host paths and README.md's
// table (host path, container) the same set.
func TestHostPathsDocumented(t *testing.T) {
	ds := daemonSet(t, objects(t))
	pod := ds.Spec.Template.Spec
	var used []string
	for _, v := range pod.Volumes {
		if v.HostPath == nil {
			continue
		}
		for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
			for _, m := range c.VolumeMounts {
				if m.Name != v.Name {
					continue
				}
				access := "rw"
				if m.ReadOnly {
					access = "ro"
				}
				used = append(used, v.HostPath.Path+" "+c.Name+" "+access)
				if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
					t.Errorf("%s: bidirectional mount propagation is not needed", v.HostPath.Path)
				}
			}
		}
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(/[^`]*)` \\| ([a-z-]+) \\| (rw|ro) \\| (.+) \\|$")
	var documented []string
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		if len(m[4]) < 30 {
			t.Errorf("README.md: %s needs a real reason, got %q", m[1], m[4])
		}
		documented = append(documented, m[1]+" "+m[2]+" "+m[3])
	}
	sort.Strings(used)
	sort.Strings(documented)
	if !slices.Equal(used, documented) {
		t.Errorf("host paths (path container access)\n in hotgpu.yaml: %q\n in README.md:   %q", used, documented)
	}
	for _, p := range used {
		if strings.HasPrefix(p, "/ ") || strings.HasPrefix(p, "/dev ") || strings.HasPrefix(p, "/proc ") {
			t.Errorf("host path %q is too broad", p)
		}
	}
}

func container(t *testing.T, ds *appsv1.DaemonSet, name string) corev1.Container {
	t.Helper()
	for _, c := range append(slices.Clone(ds.Spec.Template.Spec.InitContainers), ds.Spec.Template.Spec.Containers...) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

func portOf(t *testing.T, c corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port %s", c.Name, name)
	return 0
}

// TestKustomization: `kubectl apply -k deploy/` applies every manifest here.
func TestKustomization(t *testing.T) {
	data, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := sigsyaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatal(err)
	}
	files, _ := pathGlob("*.yaml")
	crds, _ := pathGlob("crd/*.yaml")
	files = append(files, crds...)
	sort.Strings(files)
	sort.Strings(k.Resources)
	if k.Kind != "Kustomization" || !slices.Equal(files, k.Resources) {
		t.Errorf("kustomization.yaml: kind %q resources %q, want Kustomization of %q", k.Kind, k.Resources, files)
	}
}
