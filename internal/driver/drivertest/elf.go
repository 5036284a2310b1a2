package drivertest

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
)

// sharedObject returns a minimal ELF shared object whose dynamic section
// names soname: enough for debug/elf and for glibc's ldconfig, which reads
// the SONAME through the program headers (PT_LOAD, PT_DYNAMIC) and lists
// the file in the linker cache. Nothing can load it for real.
func sharedObject(soname string, is64 bool) []byte {
	if is64 {
		return sharedObject64(soname)
	}
	return sharedObject32(soname)
}

var shstrtab = []byte("\x00.dynstr\x00.dynamic\x00.shstrtab\x00")

func sharedObject64(soname string) []byte {
	const ehsize, phsize, shsize, dynsize = 64, 56, 64, 16
	dynstr := append(append([]byte{0}, soname...), 0)
	strOff := uint64(ehsize + 2*phsize)
	dynOff := align(strOff+uint64(len(dynstr)), 8)
	dynLen := uint64(4 * dynsize)
	shstrOff := dynOff + dynLen
	shOff := align(shstrOff+uint64(len(shstrtab)), 8)
	size := shOff + 4*shsize

	var b bytes.Buffer
	hdr := elf.Header64{
		Type: uint16(elf.ET_DYN), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Phoff: ehsize, Shoff: shOff, Ehsize: ehsize, Phentsize: phsize, Phnum: 2,
		Shentsize: shsize, Shnum: 4, Shstrndx: 3,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS], hdr.Ident[elf.EI_DATA], hdr.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	write(&b, hdr)
	write(&b, elf.Prog64{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R), Filesz: size, Memsz: size, Align: 0x1000})
	write(&b, elf.Prog64{Type: uint32(elf.PT_DYNAMIC), Flags: uint32(elf.PF_R | elf.PF_W), Off: dynOff, Vaddr: dynOff, Paddr: dynOff, Filesz: dynLen, Memsz: dynLen, Align: 8})
	b.Write(dynstr)
	pad(&b, dynOff)
	write(&b, []elf.Dyn64{
		{Tag: int64(elf.DT_SONAME), Val: 1},
		{Tag: int64(elf.DT_STRTAB), Val: strOff},
		{Tag: int64(elf.DT_STRSZ), Val: uint64(len(dynstr))},
		{Tag: int64(elf.DT_NULL)},
	})
	b.Write(shstrtab)
	pad(&b, shOff)
	write(&b, []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_STRTAB), Flags: uint64(elf.SHF_ALLOC), Addr: strOff, Off: strOff, Size: uint64(len(dynstr)), Addralign: 1},
		{Name: 9, Type: uint32(elf.SHT_DYNAMIC), Flags: uint64(elf.SHF_ALLOC | elf.SHF_WRITE), Addr: dynOff, Off: dynOff, Size: dynLen, Link: 1, Addralign: 8, Entsize: dynsize},
		{Name: 18, Type: uint32(elf.SHT_STRTAB), Off: shstrOff, Size: uint64(len(shstrtab)), Addralign: 1},
	})
	return b.Bytes()
}

func sharedObject32(soname string) []byte {
	const ehsize, phsize, shsize, dynsize = 52, 32, 40, 8
	dynstr := append(append([]byte{0}, soname...), 0)
	strOff := uint32(ehsize + 2*phsize)
	dynOff := uint32(align(uint64(strOff)+uint64(len(dynstr)), 4))
	dynLen := uint32(4 * dynsize)
	shstrOff := dynOff + dynLen
	shOff := uint32(align(uint64(shstrOff)+uint64(len(shstrtab)), 4))
	size := shOff + 4*shsize

	var b bytes.Buffer
	hdr := elf.Header32{
		Type: uint16(elf.ET_DYN), Machine: uint16(elf.EM_386), Version: uint32(elf.EV_CURRENT),
		Phoff: ehsize, Shoff: shOff, Ehsize: ehsize, Phentsize: phsize, Phnum: 2,
		Shentsize: shsize, Shnum: 4, Shstrndx: 3,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS], hdr.Ident[elf.EI_DATA], hdr.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS32), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	write(&b, hdr)
	write(&b, elf.Prog32{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R), Filesz: size, Memsz: size, Align: 0x1000})
	write(&b, elf.Prog32{Type: uint32(elf.PT_DYNAMIC), Flags: uint32(elf.PF_R | elf.PF_W), Off: dynOff, Vaddr: dynOff, Paddr: dynOff, Filesz: dynLen, Memsz: dynLen, Align: 4})
	b.Write(dynstr)
	pad(&b, uint64(dynOff))
	write(&b, []elf.Dyn32{
		{Tag: int32(elf.DT_SONAME), Val: 1},
		{Tag: int32(elf.DT_STRTAB), Val: strOff},
		{Tag: int32(elf.DT_STRSZ), Val: uint32(len(dynstr))},
		{Tag: int32(elf.DT_NULL)},
	})
	b.Write(shstrtab)
	pad(&b, uint64(shOff))
	write(&b, []elf.Section32{
		{},
		{Name: 1, Type: uint32(elf.SHT_STRTAB), Flags: uint32(elf.SHF_ALLOC), Addr: strOff, Off: strOff, Size: uint32(len(dynstr)), Addralign: 1},
		{Name: 9, Type: uint32(elf.SHT_DYNAMIC), Flags: uint32(elf.SHF_ALLOC | elf.SHF_WRITE), Addr: dynOff, Off: dynOff, Size: dynLen, Link: 1, Addralign: 4, Entsize: dynsize},
		{Name: 18, Type: uint32(elf.SHT_STRTAB), Off: shstrOff, Size: uint32(len(shstrtab)), Addralign: 1},
	})
	return b.Bytes()
}

func align(n, a uint64) uint64 { return (n + a - 1) &^ (a - 1) }

func pad(b *bytes.Buffer, to uint64) {
	for uint64(b.Len()) < to {
		b.WriteByte(0)
	}
}

// write cannot fail: a bytes.Buffer takes everything, and every value is
// a fixed-size struct.
func write(b *bytes.Buffer, v any) { _ = binary.Write(b, binary.LittleEndian, v) }
