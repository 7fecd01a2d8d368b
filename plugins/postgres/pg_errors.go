package postgres

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
)

// transient reports a failure that a retry of the whole transaction is
// expected to outlive: the connection or the server going away,
// contention, limits. Any other failure that is not a row's (rowError) is
// retried too, since it is not the data's fault either (a server turned
// read-only, a changed password, a missing table), but logged as an error:
// it lasts until someone acts.
func transient(err error) bool {
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true // whatever the server said while connecting
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", // connection exception
			"40", // transaction rollback: serialization failure, deadlock
			"53", // insufficient resources: too many connections, disk full
			"57": // operator intervention: admin shutdown, cannot connect now
			// …but not what a smaller batch avoids, which the same batch
			// would meet again: a statement timeout (57014), running out
			// of memory (53200) or over temp_file_limit (53400).
			// Bisecting makes its statements smaller.
			return !batchSized(pgErr.Code)
		}
		return pgErr.Code == "55P03" // lock not available
	}
	var netErr net.Error
	switch {
	case errors.As(err, &netErr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err), pgconn.SafeToRetry(err):
		return true
	}
	// A connection that died mid-statement: pgx reports it closed.
	return isClosedConn(err)
}

// batchSized: a failure a smaller batch avoids.
func batchSized(code string) bool {
	return code == "57014" || code == "53200" || code == "53400"
}

// environmental reports a failure that no row's data causes: the server's
// or the configuration's (a read-only server, a missing table, column or
// function, a refused privilege, an I/O or internal error). Found while
// bisecting, it holds the whole batch, even when other parts of it could
// be written: dead-lettering the rows it met would send a whole table's
// changes away for what an operator must fix.
func environmental(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code[:2] {
	case "0A", // feature not supported
		"25", // invalid transaction state: read-only transaction
		"28", // invalid authorization
		"3D", // invalid catalog name
		"3F", // invalid schema name
		"42", // syntax error or access rule violation: undefined table, column, function; privilege
		"55", // object not in prerequisite state
		"58", // system error: I/O
		"F0", // configuration file error
		"XX": // internal error
		return true
	}
	return false
}

func isClosedConn(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		switch e.Error() {
		case "conn closed", "conn busy", "closed pool":
			return true
		}
	}
	return false
}

// rowError reports PostgreSQL refusing a row's data: a data exception
// (22xxx: bad number, value too long, bad date), an integrity constraint
// violation (23xxx: not null, check, foreign key), a value over a limit
// (54xxx: an index row larger than a page, JSON nested too deep), a check
// option of a view (44000), or an error raised in a function or trigger
// that a row ran (P0xxx: RAISE, no or too many rows INTO STRICT, ASSERT;
// 2Fxxx, 38xxx, 39xxx: routine exceptions; 27000: a triggered change
// violation).
func rowError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "21000", // "ON CONFLICT DO UPDATE command cannot affect row a second time": two changes of one key the reduction took for two
		"27000", "44000":
		return true
	}
	switch pgErr.Code[:2] {
	case "22", "23", "54", "P0", "2F", "38", "39":
		return true
	}
	return false
}
