package nvml

import (
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/hotgpu/hotgpu/internal/gpu"
)

// reader walks one NVML (real or mock) into an inventory. Everything it knows
// about NVML goes through nvml.Interface, so simulation exercises the same code
// as real hardware.
type reader struct {
	lib       nvml.Interface
	majors    majors
	migMinors func() (migMinors, error)
	minors    migMinors // loaded on the first MIG device
	// known is the last inventory read, so a GPU that is lost now keeps
	// the identity (UUID, minor) it had: live grants of it can still be
	// revoked by its minor. Nil at start-up.
	known *gpu.Inventory
}

func (r *reader) inventory() (*gpu.Inventory, error) {
	inv := &gpu.Inventory{}
	var err error
	if inv.DriverVersion, err = r.driverVersion(); err != nil {
		return nil, err
	}
	if inv.CUDAVersion, err = r.cudaVersion(); err != nil {
		return nil, err
	}
	count, ret := r.lib.DeviceGetCount()
	if err := check(ret, "count GPUs"); err != nil {
		return nil, err
	}
	devs := make([]nvml.Device, count)
	inv.GPUs = make([]gpu.GPU, count)
	for i := range count {
		d, ret := r.lib.DeviceGetHandleByIndex(i)
		if err := check(ret, "get handle of GPU %d", i); err != nil {
			// NVML counts it but cannot open it: the others still work.
			inv.GPUs[i] = r.lostGPU(nil, i, err)
			continue
		}
		if err := r.readGPU(d, &inv.GPUs[i]); err != nil {
			if !isBroken(err) {
				return nil, err
			}
			inv.GPUs[i] = r.lostGPU(d, i, err)
			continue
		}
		devs[i] = d
	}
	if err := readPeers(devs, inv.GPUs); err != nil {
		return nil, err
	}
	return inv, nil
}

// lostGPU is the record of GPU i, which NVML counts but cannot read (err):
// what the GPU still answers, else what the last inventory knew of the GPU
// at the same bus id (or index), else stand-ins.
func (r *reader) lostGPU(d nvml.Device, i int, err error) gpu.GPU {
	g := gpu.GPU{Index: i, Minor: -1, Lost: err.Error()}
	if d != nil {
		g.PCIBusID, _ = busIDOf(d, i)
		if u, ret := d.GetUUID(); ret == nvml.SUCCESS {
			g.UUID = u
		}
		if m, ret := d.GetMinorNumber(); ret == nvml.SUCCESS {
			g.Minor = m
		}
	}
	if k := r.knownGPU(g.PCIBusID, i); k != nil && (g.UUID == "" || g.UUID == k.UUID) {
		g.UUID, g.PCIBusID, g.Name, g.MemoryMiB = k.UUID, k.PCIBusID, k.Name, k.MemoryMiB
		if g.Minor < 0 {
			g.Minor = k.Minor
		}
	}
	if g.UUID == "" {
		g.UUID = gpu.LostID(g.PCIBusID, i)
	}
	return g
}

// knownGPU finds the GPU of the last inventory at busID or, when the bus id
// is unreadable, at NVML index i (a lost GPU keeps its place in NVML's count).
func (r *reader) knownGPU(busID string, i int) *gpu.GPU {
	if r.known == nil {
		return nil
	}
	for j := range r.known.GPUs {
		k := &r.known.GPUs[j]
		if k.Lost != "" && strings.HasPrefix(k.UUID, "lost-") {
			continue // a stand-in knows nothing
		}
		if (busID != "" && k.PCIBusID == busID) || (busID == "" && k.Index == i) {
			return k
		}
	}
	return nil
}

func (r *reader) driverVersion() (string, error) {
	v, ret := r.lib.SystemGetDriverVersion()
	return v, check(ret, "get driver version")
}

// cudaVersion formats NVML's integer (12040) the way nvidia-smi does ("12.4").
func (r *reader) cudaVersion() (string, error) {
	v, ret := r.lib.SystemGetCudaDriverVersion()
	if err := check(ret, "get CUDA driver version"); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d.%d", v/1000, v%1000/10), nil
}

func (r *reader) readGPU(d nvml.Device, g *gpu.GPU) error {
	var ret nvml.Return
	if g.Index, ret = d.GetIndex(); ret != nvml.SUCCESS {
		return check(ret, "get index of a GPU")
	}
	var err error
	if g.Minor, err = minorOf(d, g.Index); err != nil {
		return err
	}
	if g.UUID, err = uuidOf(d, g.Index); err != nil {
		return err
	}
	if g.PCIBusID, err = busIDOf(d, g.Index); err != nil {
		return err
	}
	if g.Name, err = nameOf(d, g.Index); err != nil {
		return err
	}
	if g.MemoryMiB, err = memoryOf(d, g.Index); err != nil {
		return err
	}
	return r.readMIG(d, g)
}

func minorOf(d nvml.Device, index int) (int, error) {
	m, ret := d.GetMinorNumber()
	return m, check(ret, "get device minor of GPU %d", index)
}

func uuidOf(d nvml.Device, index int) (string, error) {
	u, ret := d.GetUUID()
	return u, check(ret, "get UUID of GPU %d", index)
}

func nameOf(d nvml.Device, index int) (string, error) {
	n, ret := d.GetName()
	return n, check(ret, "get product name of GPU %d", index)
}

func memoryOf(d nvml.Device, index int) (uint64, error) {
	m, ret := d.GetMemoryInfo()
	return m.Total >> 20, check(ret, "get memory size of GPU %d", index)
}

func busIDOf(d nvml.Device, index int) (string, error) {
	info, ret := d.GetPciInfo()
	if err := check(ret, "get PCI bus id of GPU %d", index); err != nil {
		return "", err
	}
	return normalizeBusID(cString(info.BusId[:])), nil
}

// normalizeBusID turns NVML's "00000000:07:00.0" into the sysfs form
// "0000:07:00.0" so bus ids compare equal whatever API produced them.
func normalizeBusID(id string) string {
	id = strings.ToLower(strings.TrimSpace(id))
	domain, rest, ok := strings.Cut(id, ":")
	if !ok || len(domain) <= 4 {
		return id
	}
	return domain[len(domain)-4:] + ":" + rest
}

// cString converts NVML's NUL-terminated char arrays.
func cString(b []int8) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}
