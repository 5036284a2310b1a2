package gpu

import (
	"maps"
	"strings"
	"testing"
)

func TestParseCharMajors(t *testing.T) {
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
		{name: "major out of range", in: "Character devices:\n99999 nvidia-uvm\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCharMajors(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !maps.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
