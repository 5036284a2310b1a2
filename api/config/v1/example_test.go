package v1

import "testing"

// The documented example config must stay loadable.
func TestExampleConfigLoads(t *testing.T) {
	c, err := Load("../../../etc/hotgpud.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.NRI.Socket != Default().NRI.Socket || len(c.Annotations.Namespaces) != 0 {
		t.Fatalf("example config drifted from the defaults: %+v", c)
	}
}
