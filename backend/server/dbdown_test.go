package server

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestDBUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connect error", fmt.Errorf("storing models: %w", &pgconn.ConnectError{}), true},
		{"connection closed", fmt.Errorf("updating job 3: %w", pgconn.ErrConnClosed), true},
		{"bad connection", driver.ErrBadConn, true},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"cannot connect now", fmt.Errorf("x: %w", &pgconn.PgError{Code: "57P03"}), true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"syntax error", &pgconn.PgError{Code: "42601"}, false},
		{"a job's own error", errors.New("training diverged"), false},
		{"a remote suspect's EOF", fmt.Errorf("querying http://x: %w", io.ErrUnexpectedEOF), false},
	} {
		if got := dbUnavailable(tc.err); got != tc.want {
			t.Errorf("%s: dbUnavailable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
