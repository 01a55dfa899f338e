package redistest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// process is one started redis-server: the exec.Cmd, and a channel closed
// once the process has exited and been reaped.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed after cmd.Wait returned
	err  error         // cmd.Wait's result; read only after done is closed
}

// exited reports whether the process has exited (and been reaped).
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits up to d for the process to exit.
func (p *process) waitExit(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-p.done:
		return true
	case <-timer.C:
		return false
	}
}

// signal sends sig to the process we started. os.Process tracks whether the
// process has been reaped (and uses a pidfd where the OS has one), so a
// recycled PID is never signalled; a process that is already gone is not an
// error.
func (p *process) signal(sig os.Signal) error {
	err := p.cmd.Process.Signal(sig)
	if err == nil || errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	if p.exited() {
		return nil
	}
	return fmt.Errorf("signal %v to pid %d: %w", sig, p.cmd.Process.Pid, err)
}

// stopGrace is how long a SIGTERMed process may take before it is SIGKILLed;
// killWait bounds the wait after SIGKILL.
const (
	stopGrace = 3 * time.Second
	killWait  = 10 * time.Second
)

// terminate stops the process: SIGTERM, then SIGKILL if it is still alive
// after stopGrace.
func (p *process) terminate() error {
	if p.exited() {
		return nil
	}
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}
	if p.waitExit(stopGrace) {
		return nil
	}
	return p.kill()
}

// kill sends SIGKILL and waits for the process to be reaped.
func (p *process) kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !p.waitExit(killWait) {
		return fmt.Errorf("pid %d still running %v after SIGKILL", p.cmd.Process.Pid, killWait)
	}
	return nil
}

// startProcess starts bin with args in dir, with stdout and stderr appended
// to outFile. The fork happens on a dedicated OS thread that lives as long
// as the test binary (see spawn), which is what makes the Linux
// parent-death signal safe to use.
//
// Output goes to a file rather than a pipe on purpose: with a pipe,
// cmd.Wait would also wait for any child redis-server forked (an RDB
// transfer to a replica) to close its inherited copy, so a Kill could hang
// on a process we did not start.
func startProcess(bin, dir, outFile string, args []string) (*process, error) {
	out, err := os.OpenFile(outFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open output file: %w", err)
	}
	defer out.Close() // the child has its own copy once started
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	p := &process{cmd: cmd, done: make(chan struct{})}

	if err := spawn(cmd.Start); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

var (
	spawnOnce sync.Once
	spawnReqs chan func()
)

// spawn runs start on the spawner goroutine and returns its result.
//
// The kernel delivers a parent-death signal when the *thread* that forked
// the child exits, not the process (https://go.dev/issue/27505). Go may end
// a thread when a goroutine locked to it exits, so forking from an arbitrary
// goroutine could kill a redis-server in the middle of a test. The spawner
// goroutine locks itself to its thread and never returns, so that thread
// lives exactly as long as the test binary.
func spawn(start func() error) error {
	spawnOnce.Do(func() {
		spawnReqs = make(chan func())
		go func() {
			runtime.LockOSThread()
			for f := range spawnReqs {
				f()
			}
		}()
	})
	res := make(chan error, 1)
	spawnReqs <- func() { res <- start() }
	return <-res
}
