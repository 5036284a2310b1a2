package sim

import (
	"crypto/sha1"
	"fmt"
)

// uuidNamespace is RFC 4122's URL namespace; names below are "hotgpu-sim:…".
var uuidNamespace = [16]byte{0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}

// nameUUID returns the RFC 4122 version-5 (SHA-1, name-based) UUID of name.
// go-nvml's mock draws random UUIDs at every start; simulated GPUs need the
// same UUID in every process (CLI, daemon, kubelet checkpoints), so they get
// one derived from their preset and slot instead.
func nameUUID(name string) string {
	h := sha1.New()
	h.Write(uuidNamespace[:])
	h.Write([]byte(name))
	s := h.Sum(nil)
	s[6] = s[6]&0x0f | 0x50 // version 5
	s[8] = s[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16])
}
