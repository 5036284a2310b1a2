package main

import (
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/ledger"
)

func TestGrantHolderShowsQuarantine(t *testing.T) {
	tests := []struct {
		name       string
		g          ledger.Grant
		holder     string
		whyContain string
	}{
		{"attach", ledger.Grant{Holder: ledger.Holder{ContainerID: "c0ffee1234567890"}, Reason: ledger.Attach, State: ledger.Active},
			"container c0ffee123456", "attach"},
		{"pending", ledger.Grant{Holder: ledger.Holder{ContainerID: "c0ffee1234567890"}, Reason: ledger.Attach, State: ledger.Pending},
			"container c0ffee123456", "attach (pending)"},
		{"quarantine", ledger.Grant{Reason: ledger.Quarantine, State: ledger.Active, Note: "detached from ml/p/app while process(es) 42 (python) still held it"},
			"QUARANTINED", "quarantine: detached from ml/p/app while process(es) 42 (python)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			holder, why := grantHolder(&tt.g)
			if holder != tt.holder || !strings.Contains(why, tt.whyContain) {
				t.Errorf("grantHolder = %q, %q; want %q, %q", holder, why, tt.holder, tt.whyContain)
			}
		})
	}
}
