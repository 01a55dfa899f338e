package redistest

import "syscall"

// sysProcAttr asks the kernel to SIGKILL the redis-server when the test
// binary dies (its spawner thread, see spawn), so that processes do not
// outlive a test binary that panics, times out or is killed before its
// t.Cleanup functions run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
