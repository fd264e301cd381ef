package openpgp

import (
	"io"
	"sync"
)

// copyBufs holds the 32 KiB buffers that streaming copies use, so that a
// message does not allocate (and the GC does not clear) a new one each.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyPooled copies r to w through a pooled buffer.
func copyPooled(w io.Writer, r io.Reader) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	_, err := io.CopyBuffer(w, r, *bp)
	return err
}
