package server

import (
	"context"
	"testing"

	"github.com/conferral/conferral/shared"
)

// BenchmarkVerifyJob measures a verification's round trip through the
// queue: record, queue, fetch, load the fingerprint and the model, classify,
// record the verdict, publish the events.
//
//	go test -run '^$' -bench VerifyJob ./backend/server
func BenchmarkVerifyJob(b *testing.B) {
	f, dir := copyFixture(b)
	s, err := New(context.Background(), Config{Dir: dir, Device: "cpu"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	ctx := context.Background()
	req := shared.JobRequest{Kind: shared.JobVerify, Verify: &shared.VerifyArgs{Fingerprint: f.fp.ID, Model: f.surrogate.ID}}
	b.ResetTimer()
	for b.Loop() {
		j, err := s.Submit(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if j, err = s.Wait(ctx, j.ID); err != nil || j.State != shared.JobCompleted {
			b.Fatalf("%v %s %s", err, j.State, j.Error)
		}
	}
}
