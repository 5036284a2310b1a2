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

// TestDRAPolicies: hotgpud's ResourceSlice writes and ResourceClaim status
// writes are checked against the node name of its bound token, fail
// closed, and are denied.
func TestDRAPolicies(t *testing.T) {
	objs := objects(t)
	for _, tc := range []struct {
		policy, resource string
		ops              []admissionv1.OperationType
		checks           []string
	}{
		{"hotgpu-resourceslices", "resourceslices", []admissionv1.OperationType{admissionv1.Create, admissionv1.Update, admissionv1.Delete},
			[]string{"spec.nodeName", "spec.driver", "spec.pool.name", "oldObject"}},
		{"hotgpu-resourceclaim-status", "resourceclaims/status", []admissionv1.OperationType{admissionv1.Update},
			[]string{"status.?allocation", "status.?reservedFor", "d.pool == variables.node", "oldObject"}},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			var policy *admissionv1.ValidatingAdmissionPolicy
			var binding *admissionv1.ValidatingAdmissionPolicyBinding
			for _, o := range objs {
				switch o := o.(type) {
				case *admissionv1.ValidatingAdmissionPolicy:
					if o.Name == tc.policy {
						policy = o
					}
				case *admissionv1.ValidatingAdmissionPolicyBinding:
					if o.Spec.PolicyName == tc.policy {
						binding = o
					}
				}
			}
			if policy == nil || binding == nil {
				t.Fatalf("want the policy and its binding, got %v %v", policy, binding)
			}
			if !slices.Equal(binding.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
				t.Errorf("binding actions %v, want Deny", binding.Spec.ValidationActions)
			}
			if policy.Spec.FailurePolicy == nil || *policy.Spec.FailurePolicy != admissionv1.Fail {
				t.Error("the policy must fail closed")
			}
			rules := policy.Spec.MatchConstraints.ResourceRules
			if len(rules) != 1 || !slices.Equal(rules[0].Resources, []string{tc.resource}) || !slices.Equal(rules[0].Operations, tc.ops) {
				t.Errorf("policy matches %+v, want %v of %s", rules, tc.ops, tc.resource)
			}
			var all string
			for _, v := range policy.Spec.Variables {
				all += v.Expression
			}
			for _, v := range policy.Spec.Validations {
				all += v.Expression
			}
			for _, want := range append([]string{"authentication.kubernetes.io/node-name"}, tc.checks...) {
				if !strings.Contains(all, want) {
					t.Errorf("the policy does not check %s", want)
				}
			}
		})
	}
}
