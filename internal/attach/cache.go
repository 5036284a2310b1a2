package attach

import (
	"fmt"
	"slices"

	"github.com/hotgpu/hotgpu/internal/hotplug"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/mountns"
)

// RecordCache records with every GPU the container holds by attach what
// giving it the driver put at path (its linker cache): the file mounted
// there and, when not zero, the empty file made to mount it on. They are
// recorded as files (device number 0) beside the control nodes, so
// whichever of those GPUs is detached last undoes them (mountns.Undo),
// restoring the container's own view; a crash is undone the same way.
func (m *Manager) RecordCache(containerID, path string, mounted, made mountns.FileID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	recs := []ledger.CreatedNode{{Path: path, Dev: mounted.Dev, Ino: mounted.Ino}}
	if made != (mountns.FileID{}) {
		recs = append(recs, ledger.CreatedNode{Path: path, Dev: made.Dev, Ino: made.Ino})
	}
	nodes := map[string][]ledger.CreatedNode{}
	for _, g := range m.ledger.Container(containerID) {
		if g.Reason != ledger.Attach {
			continue
		}
		list := g.Nodes.List()
		for _, r := range recs {
			if !slices.Contains(list, r) {
				list = append(list, r)
			}
		}
		nodes[g.GPU] = list
	}
	if len(nodes) == 0 {
		return fmt.Errorf("container %s holds no GPU by attach to record %s with", ledger.ShortID(containerID), path)
	}
	return m.ledger.SetNodes(containerID, nodes)
}

// splitFiles separates the device nodes of made from the other files.
func splitFiles(made []hotplug.Made) (nodes, files []hotplug.Made) {
	for _, n := range made {
		if isFile(n) {
			files = append(files, n)
		} else {
			nodes = append(nodes, n)
		}
	}
	return nodes, files
}

// undoFiles takes away the files recorded in files (a mount and the file
// made to mount it on, by path) from the container of pid, and returns the
// paths where it found something else and left it.
func undoFiles(pid int, files []hotplug.Made) (left []string, err error) {
	byPath := map[string][]mountns.FileID{}
	var paths []string
	for _, f := range files {
		if _, ok := byPath[f.Path]; !ok {
			paths = append(paths, f.Path)
		}
		byPath[f.Path] = append(byPath[f.Path], mountns.FileID{Dev: f.Dev, Ino: f.Ino})
	}
	for _, p := range paths {
		kept, err := mountns.Undo(pid, p, byPath[p]...)
		if err != nil {
			return left, err
		}
		if kept {
			left = append(left, p)
		}
	}
	return left, nil
}
