package v1

import (
	"reflect"
	"testing"
)

// The documented example config must stay loadable and say exactly the
// defaults, so it documents every key with its real default.
func TestExampleConfigLoads(t *testing.T) {
	c, err := Load("../../../etc/hotgpud.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Annotations.Namespaces) == 0 {
		c.Annotations.Namespaces = nil // the file spells out "[]"
	}
	if def := Default(); !reflect.DeepEqual(c, def) {
		t.Fatalf("example config drifted from the defaults:\n got %+v\nwant %+v", c, def)
	}
}
