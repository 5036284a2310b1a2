package deploy

import (
	"path"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"

	configv1 "github.com/hotgpu/hotgpu/api/config/v1"
)

// TestDaemonSetCarriesDRA: the ConfigMap enables the DRA plugin, and the
// DaemonSet mounts the plugin registration dir and the driver's own plugin
// dir at the paths they have on the host under dra.kubeletRootDir (kubelet
// dials the socket at the path the plugin registers).
func TestDaemonSetCarriesDRA(t *testing.T) {
	objs := objects(t)
	var cfg *configv1.Config
	for _, o := range objs {
		if cm, ok := o.(*corev1.ConfigMap); ok && cm.Data["hotgpud.yaml"] != "" {
			c, err := configv1.Parse([]byte(cm.Data["hotgpud.yaml"]))
			if err != nil {
				t.Fatal(err)
			}
			cfg = c
		}
	}
	if cfg == nil || !cfg.DRA.Enabled {
		t.Fatal("the ConfigMap does not enable the DRA plugin (dra.enabled)")
	}
	ds := daemonSet(t, objs)
	hostPaths := map[string]string{}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	c := container(t, ds, "hotgpud")
	for _, want := range []string{path.Join(cfg.DRA.KubeletRootDir, "plugins_registry"), path.Join(cfg.DRA.KubeletRootDir, "plugins", "gpu.hotgpu.dev")} {
		i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == want })
		if i < 0 {
			t.Errorf("hotgpud does not mount %s", want)
			continue
		}
		if m := c.VolumeMounts[i]; hostPaths[m.Name] != want || m.ReadOnly {
			t.Errorf("%s mounts host path %q (read-only %t), want the same path read-write", want, hostPaths[m.Name], m.ReadOnly)
		}
	}
}

// TestResourceSlicePolicy: hotgpud's ResourceSlice writes are checked
// against the node name of its bound token, fail closed, and denied.
func TestResourceSlicePolicy(t *testing.T) {
	var policy *admissionv1.ValidatingAdmissionPolicy
	var binding *admissionv1.ValidatingAdmissionPolicyBinding
	for _, o := range objects(t) {
		switch o := o.(type) {
		case *admissionv1.ValidatingAdmissionPolicy:
			if o.Name == "hotgpu-resourceslices" {
				policy = o
			}
		case *admissionv1.ValidatingAdmissionPolicyBinding:
			if o.Spec.PolicyName == "hotgpu-resourceslices" {
				binding = o
			}
		}
	}
	if policy == nil || binding == nil {
		t.Fatalf("want the policy hotgpu-resourceslices and its binding, got %v %v", policy, binding)
	}
	if !slices.Equal(binding.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Errorf("binding actions %v, want Deny", binding.Spec.ValidationActions)
	}
	if policy.Spec.FailurePolicy == nil || *policy.Spec.FailurePolicy != admissionv1.Fail {
		t.Error("the policy must fail closed")
	}
	rules := policy.Spec.MatchConstraints.ResourceRules
	if len(rules) != 1 || !slices.Equal(rules[0].Resources, []string{"resourceslices"}) ||
		!slices.Equal(rules[0].Operations, []admissionv1.OperationType{admissionv1.Create, admissionv1.Update, admissionv1.Delete}) {
		t.Errorf("policy matches %+v, want CREATE, UPDATE and DELETE of resourceslices", rules)
	}
	var all string
	for _, v := range policy.Spec.Variables {
		all += v.Expression
	}
	for _, v := range policy.Spec.Validations {
		all += v.Expression
	}
	for _, want := range []string{"authentication.kubernetes.io/node-name", "spec.nodeName", "spec.driver", "oldObject"} {
		if !strings.Contains(all, want) {
			t.Errorf("the policy does not check %s", want)
		}
	}
}
