package deploy

import (
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// agentRules is everything hotgpud's account may do: read pods, create and
// delete attachments' holder pods and annotation GPUs' charge pods
// (admission.yaml keeps them to holders on its own node and gated charge
// pods labelled with it), carry out GPUAttachments, record events, run the
// DRA plugin. Nothing more may creep in unnoticed.
var agentRules = map[string][]string{
	"/pods":                                {"get", "list", "watch", "patch", "create", "delete"},
	"hotgpu.dev/gpuattachments":            {"get", "list", "watch", "create", "update", "patch", "delete"},
	"hotgpu.dev/gpuattachments/status":     {"update", "patch"},
	"hotgpu.dev/gpuattachments/finalizers": {"update", "patch"},
	"/events":                              {"create", "patch"},
	"events.k8s.io/events":                 {"create", "patch"},
	// the DRA kubelet plugin: its node's ResourceSlice, the claims it
	// prepares, its Node (the slice's owner)
	"resource.k8s.io/resourceslices":        {"get", "list", "watch", "create", "update", "delete"},
	"resource.k8s.io/resourceclaims":        {"get"},
	"resource.k8s.io/resourceclaims/status": {"patch"},
	"/nodes":                                {"get"},
}

// checkAgentRole: hotgpud's service account is bound to exactly one
// ClusterRole, whose rules are agentRules.
func checkAgentRole(t *testing.T, objs []runtime.Object, sa string) {
	t.Helper()
	roles := map[string]*rbacv1.ClusterRole{}
	var bound []string
	for _, o := range objs {
		switch o := o.(type) {
		case *rbacv1.ClusterRole:
			roles[o.Name] = o
		case *rbacv1.ClusterRoleBinding:
			for _, s := range o.Subjects {
				if s.Kind == "ServiceAccount" && s.Name == sa {
					bound = append(bound, o.RoleRef.Name)
				}
			}
		case *rbacv1.RoleBinding, *rbacv1.Role:
			t.Errorf("unexpected namespaced RBAC object %T", o)
		}
	}
	if len(bound) != 1 || roles[bound[0]] == nil {
		t.Fatalf("%s is bound to %v, want one ClusterRole of deploy/", sa, bound)
	}
	got := map[string][]string{}
	for _, r := range roles[bound[0]].Rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("unexpected rule %+v", r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				got[g+"/"+res] = append(got[g+"/"+res], r.Verbs...)
			}
		}
	}
	for k, want := range agentRules {
		if !slices.Equal(got[k], want) {
			t.Errorf("hotgpud may %v %s, want %v", got[k], k, want)
		}
		delete(got, k)
	}
	for k, v := range got {
		t.Errorf("hotgpud may %v %s: not in agentRules", v, k)
	}
}

// TestTenantRolesAggregate: the tenant roles aggregate to edit/admin and
// view, and view cannot write.
func TestTenantRolesAggregate(t *testing.T) {
	want := map[string]string{
		"rbac.authorization.k8s.io/aggregate-to-edit": "create delete get list patch watch",
		"rbac.authorization.k8s.io/aggregate-to-view": "get list watch",
	}
	for _, o := range objects(t) {
		r, ok := o.(*rbacv1.ClusterRole)
		if !ok {
			continue
		}
		for label, verbs := range want {
			if r.Labels[label] != "true" {
				continue
			}
			if len(r.Rules) != 1 || !slices.Equal(r.Rules[0].Resources, []string{"gpuattachments"}) {
				t.Errorf("%s: rules %+v, want gpuattachments only", r.Name, r.Rules)
				continue
			}
			v := slices.Sorted(slices.Values(r.Rules[0].Verbs))
			if strings.Join(v, " ") != verbs {
				t.Errorf("%s (%s) verbs %v, want %s", r.Name, label, v, verbs)
			}
			delete(want, label)
		}
	}
	if len(want) != 0 {
		t.Errorf("no ClusterRole aggregated by %v", want)
	}
}

// TestNodeAgentPolicy: every admission policy matches hotgpud's writes,
// checks the node name of its bound token, fails closed and is bound Deny.
func TestNodeAgentPolicy(t *testing.T) {
	policies := map[string]*admissionv1.ValidatingAdmissionPolicy{}
	bound := map[string]*admissionv1.ValidatingAdmissionPolicyBinding{}
	for _, o := range objects(t) {
		switch o := o.(type) {
		case *admissionv1.ValidatingAdmissionPolicy:
			policies[o.Name] = o
		case *admissionv1.ValidatingAdmissionPolicyBinding:
			bound[o.Spec.PolicyName] = o
		}
	}
	for _, name := range []string{"hotgpu-node-agent", "hotgpu-holder-pods", "hotgpu-pod-writes", "hotgpu-resourceslices", "hotgpu-resourceclaim-status"} {
		if policies[name] == nil {
			t.Errorf("no ValidatingAdmissionPolicy %s", name)
		}
	}
	for name, policy := range policies {
		binding := bound[name]
		if binding == nil {
			t.Errorf("policy %s has no binding", name)
			continue
		}
		if !slices.Equal(binding.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
			t.Errorf("%s: binding actions %v, want Deny", name, binding.Spec.ValidationActions)
		}
		if policy.Spec.FailurePolicy == nil || *policy.Spec.FailurePolicy != admissionv1.Fail {
			t.Errorf("%s must fail closed", name)
		}
		var vars, matches string
		for _, v := range policy.Spec.Variables {
			vars += v.Expression
		}
		for _, m := range policy.Spec.MatchConditions {
			matches += m.Expression
		}
		if !strings.Contains(vars, "authentication.kubernetes.io/node-name") {
			t.Errorf("%s does not read the token's node name", name)
		}
		if !strings.Contains(matches, `"system:serviceaccount:hotgpu-system:hotgpud"`) {
			t.Errorf("%s does not match hotgpud's account: %q", name, matches)
		}
	}
}
