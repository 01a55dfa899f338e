package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// DoTimeout bounds one [Do] call: dialing, writing the command and reading
// the whole reply.
const DoTimeout = 5 * time.Second

// maxBulkLen and maxArrayLen bound what the RESP reader accepts, so a
// corrupted stream fails fast instead of allocating without limit.
const (
	maxBulkLen  = 512 << 20
	maxArrayLen = 1 << 24
)

// ErrNil is returned by [Do] when the reply is a RESP nil (a nil bulk string
// such as GET of a missing key, or a nil array).
var ErrNil = errors.New("redistest: nil reply")

// ReplyError is a RESP error reply ("-ERR ...", "-MOVED ...", ...) returned
// by the server. Use errors.As to inspect it.
type ReplyError struct {
	// Msg is the error text without the leading '-', e.g.
	// "MOVED 3999 127.0.0.1:30002".
	Msg string
}

func (e *ReplyError) Error() string { return "redis error reply: " + e.Msg }

// Do sends one command to the Redis server (or sentinel) at addr over a fresh
// TCP connection and returns its reply flattened to a string:
//
//   - simple string: its text ("OK", "PONG");
//   - integer: its decimal text ("1");
//   - bulk string: its content, verbatim (INFO replies keep their "\r\n");
//   - array: its elements flattened recursively and joined with "\n" (a nil
//     element becomes an empty line);
//   - nil bulk string or nil array: "" and [ErrNil];
//   - error: "" and a *[ReplyError]; an error nested inside an array (EXEC)
//     is returned the same way.
//
// The whole call is bounded by [DoTimeout]. Do is safe for concurrent use.
func Do(addr string, args ...string) (string, error) {
	v, err := doRaw(addr, DoTimeout, args...)
	if err != nil {
		return "", err
	}
	if v == nil {
		return "", ErrNil
	}
	return flatten(v)
}

// doRaw sends one command and returns the parsed reply: string (simple or
// bulk), int64, []any, nil, or *ReplyError as the error. The whole exchange
// is bounded by timeout.
func doRaw(addr string, timeout time.Duration, args ...string) (any, error) {
	if len(args) == 0 {
		return nil, errors.New("redistest: Do needs a command")
	}
	deadline := time.Now().Add(timeout)
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, fmt.Errorf("redistest: dial %s: %w", addr, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("redistest: set deadline on %s: %w", addr, err)
	}
	if _, err := conn.Write(encodeCommand(args)); err != nil {
		return nil, fmt.Errorf("redistest: %s to %s: write: %w", args[0], addr, err)
	}
	v, err := readReply(bufio.NewReader(conn))
	if err != nil {
		var re *ReplyError
		if errors.As(err, &re) {
			return nil, err
		}
		return nil, fmt.Errorf("redistest: %s to %s: read reply: %w", args[0], addr, err)
	}
	return v, nil
}

// encodeCommand encodes args as a RESP array of bulk strings, the form every
// Redis command takes on the wire.
func encodeCommand(args []string) []byte {
	var b strings.Builder
	b.WriteString("*")
	b.WriteString(strconv.Itoa(len(args)))
	b.WriteString("\r\n")
	for _, a := range args {
		b.WriteString("$")
		b.WriteString(strconv.Itoa(len(a)))
		b.WriteString("\r\n")
		b.WriteString(a)
		b.WriteString("\r\n")
	}
	return []byte(b.String())
}

// readReply reads one RESP2 reply. An error reply is returned as a
// *ReplyError error; an error nested in an array is returned as a
// *ReplyError element.
func readReply(r *bufio.Reader) (any, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, err
	}
	if line == "" {
		return nil, errors.New("empty RESP line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, &ReplyError{Msg: body}
	case ':':
		n, err := strconv.ParseInt(body, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad RESP integer %q: %w", body, err)
		}
		return n, nil
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 || n > maxBulkLen {
			return nil, fmt.Errorf("bad RESP bulk length %q", body)
		}
		if n == -1 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		if buf[n] != '\r' || buf[n+1] != '\n' {
			return nil, errors.New("RESP bulk string not terminated by CRLF")
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 || n > maxArrayLen {
			return nil, fmt.Errorf("bad RESP array length %q", body)
		}
		if n == -1 {
			return nil, nil
		}
		arr := make([]any, 0, n)
		for range n {
			v, err := readReply(r)
			var re *ReplyError
			if errors.As(err, &re) {
				arr = append(arr, re)
				continue
			}
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		return arr, nil
	default:
		return nil, fmt.Errorf("unsupported RESP type byte %q", line[0])
	}
}

// readLine reads one CRLF-terminated line and returns it without the CRLF.
func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return "", fmt.Errorf("RESP line not terminated by CRLF: %q", line)
	}
	return line[:len(line)-2], nil
}

// flatten turns a parsed reply into the string form documented on Do.
func flatten(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case *ReplyError:
		return "", x
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			s, err := flatten(e)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return strings.Join(parts, "\n"), nil
	default:
		return "", fmt.Errorf("redistest: unexpected reply type %T", v)
	}
}

// ParseInfo parses the text of an INFO (or CLUSTER INFO) reply into a map of
// field to value. Section headers ("# Replication") and blank lines are
// skipped. Values keep their raw form ("slave0:ip=127.0.0.1,port=...").
func ParseInfo(info string) map[string]string {
	m := make(map[string]string)
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		m[k] = v
	}
	return m
}
