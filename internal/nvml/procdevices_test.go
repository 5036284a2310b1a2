package nvml

import (
	"maps"
	"strings"
	"testing"
)

func TestParseProcDevices(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    map[string]int64
		wantErr bool
	}{
		{
			name: "driver loaded",
			in:   "Character devices:\n  1 mem\n195 nvidia-frontend\n236 nvidia-caps\n509 nvidia-uvm\n\nBlock devices:\n  7 loop\n",
			want: map[string]int64{"mem": 1, "nvidia-frontend": 195, "nvidia-caps": 236, "nvidia-uvm": 509},
		},
		{
			name: "block devices ignored",
			in:   "Character devices:\n  1 mem\nBlock devices:\n 42 nvidia-uvm\n",
			want: map[string]int64{"mem": 1},
		},
		{
			name: "first entry wins",
			in:   "Character devices:\n195 nvidia\n196 nvidia\n",
			want: map[string]int64{"nvidia": 195},
		},
		{name: "empty", in: "", want: map[string]int64{}},
		{name: "bad major", in: "Character devices:\nxx nvidia\n", wantErr: true},
		{name: "bad line", in: "Character devices:\n195\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcDevices(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !maps.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRealModeNeedsUVM(t *testing.T) {
	tests := []struct {
		name, file string
		wantErr    string
	}{
		{"uvm loaded", "testdata/proc-devices", ""},
		{"uvm missing", "testdata/proc-devices-no-uvm", "modprobe nvidia-uvm"},
		{"file missing", "testdata/absent", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Provider{opts: defaultOptions()} // real mode: no simulation
			p.opts.procDevices = tt.file
			m, err := p.majors()
			if tt.wantErr == "" {
				if err != nil || m.uvm != 509 || m.caps != 236 {
					t.Fatalf("majors = %+v, %v", m, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
