package avrocodec

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// DecodeError reports bytes that are not a valid datum of the codec's schema.
// Offset and Path locate the problem so that a dead-letter record can say
// exactly what was wrong with a message.
type DecodeError struct {
	// Offset is the index in the decoded buffer of the first byte of the
	// value that failed (for trailing bytes: of the first trailing byte).
	Offset int
	// Path is the field path of the failing value, e.g. "after.balance" or
	// "items[3]", empty for the top-level value.
	Path string
	// Err describes the problem.
	Err error
}

// Error formats the problem with its location.
func (e *DecodeError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("avrocodec: decode at byte %d: %v", e.Offset, e.Err)
	}
	return fmt.Sprintf("avrocodec: decode %s at byte %d: %v", e.Path, e.Offset, e.Err)
}

// Unwrap returns the underlying problem.
func (e *DecodeError) Unwrap() error { return e.Err }

// EncodeError reports a value that the codec's schema cannot represent.
type EncodeError struct {
	// Path is the field path of the failing value, e.g.
	// "after.account_balance", empty for the top-level value.
	Path string
	// Err describes the problem.
	Err error
}

// Error formats the problem with its location.
func (e *EncodeError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("avrocodec: encode: %v", e.Err)
	}
	return fmt.Sprintf("avrocodec: encode %s: %v", e.Path, e.Err)
}

// Unwrap returns the underlying problem.
func (e *EncodeError) Unwrap() error { return e.Err }

// ErrTruncated is wrapped by decode errors for input that ends inside a
// value, so that callers can tell a cut-off message from a corrupt one.
var ErrTruncated = errors.New("unexpected end of input")

// pathError carries a problem up through the compiled tree, each level adding
// its segment, so that the path is only ever built when something failed.
type pathError struct {
	offset int
	// segs holds the path innermost first: appending while unwinding is
	// cheaper than prepending.
	segs []string
	err  error
}

func (e *pathError) Error() string { return e.path() + ": " + e.err.Error() }

func (e *pathError) path() string {
	var sb strings.Builder
	for i := len(e.segs) - 1; i >= 0; i-- {
		s := e.segs[i]
		if sb.Len() > 0 && s[0] != '[' {
			sb.WriteByte('.')
		}
		sb.WriteString(s)
	}
	return sb.String()
}

// inField adds a record field name to err's path.
func inField(err error, name string) error {
	if pe, ok := err.(*pathError); ok {
		pe.segs = append(pe.segs, name)
		return pe
	}
	return &pathError{offset: -1, segs: []string{name}, err: err}
}

// inIndex adds an array index to err's path.
func inIndex(err error, i int) error {
	return inField(err, "["+strconv.Itoa(i)+"]")
}

// inKey adds a map key to err's path.
func inKey(err error, k string) error {
	return inField(err, "["+strconv.Quote(k)+"]")
}

func toDecodeError(err error) error {
	var pe *pathError
	if errors.As(err, &pe) {
		return &DecodeError{Offset: pe.offset, Path: pe.path(), Err: pe.err}
	}
	return &DecodeError{Offset: -1, Err: err}
}

func toEncodeError(err error) error {
	var pe *pathError
	if errors.As(err, &pe) {
		return &EncodeError{Path: pe.path(), Err: pe.err}
	}
	return &EncodeError{Err: err}
}

// encodeErrorf starts an encode error; the path is added while unwinding.
func encodeErrorf(format string, args ...any) error {
	return &pathError{offset: -1, err: fmt.Errorf(format, args...)}
}
