package daemon

import (
	"fmt"
	"testing"

	"github.com/hotgpu/hotgpu/internal/alloc"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

type noneFree struct{ healthy bool }

func (n noneFree) HeldBy(string) string {
	if n.healthy {
		return "c (attach)"
	}
	return ""
}
func (n noneFree) Healthy(string) bool { return n.healthy }

// The allocation-error metric is labelled by what went wrong, from the
// errors' kinds, not their wording.
func TestErrorReason(t *testing.T) {
	inv := &gpu.Inventory{GPUs: []gpu.GPU{{Index: 0, UUID: "GPU-a"}}}
	_, held := alloc.Choose(inv, noneFree{healthy: true}, []string{"0"}, 0)
	_, sick := alloc.Choose(inv, noneFree{}, []string{"0"}, 0)
	_, full := alloc.Choose(inv, noneFree{healthy: true}, nil, 1)
	_, missing := inv.Lookup("3")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{held, "held"}, {sick, "unhealthy"}, {full, "no_free_gpu"}, {missing, "not_found"},
		{&ledger.HeldError{GPU: "GPU-a"}, "held"}, {fmt.Errorf("x: %w", attach.ErrBusy), "busy"},
		{fmt.Errorf("disk full"), "other"},
	} {
		if got := errorReason(tc.err); got != tc.want {
			t.Errorf("errorReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
