package server

import (
	"net/http"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/request"
	"github.com/conferral/conferral/backend/train"
	"github.com/conferral/conferral/shared"
)

// TestDeriveAttacks checks that a derive request accepts every attack of
// train's registry (the request reaches the check of its source), refuses
// any other naming them all, and takes a recipe exactly for the attacks that
// train.
func TestDeriveAttacks(t *testing.T) {
	ts := start(t, Config{Dir: t.TempDir()})
	post := func(body string) (int, string) {
		req, _ := http.NewRequest("POST", ts.http.URL+"/api/jobs", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		var e shared.APIError
		code := ts.do(req, &e)
		return code, e.Error
	}
	for _, a := range train.Registry() {
		t.Run(a.Name, func(t *testing.T) {
			if code, msg := post(`{"kind":"derive","derive":{"source":"abc","attack":"` + a.Name + `"}}`); code != http.StatusBadRequest || !strings.Contains(msg, `no stored model "abc"`) {
				t.Errorf("%d %q, want 400 from the model check", code, msg)
			}
			code, msg := post(`{"kind":"derive","derive":{"source":"abc","attack":"` + a.Name + `","recipe":"adam,epochs=1"}}`)
			if want := map[bool]string{true: `no stored model "abc"`, false: "trains nothing"}[a.Trains]; code != http.StatusBadRequest || !strings.Contains(msg, want) {
				t.Errorf("with a recipe: %d %q, want 400 saying %q", code, msg, want)
			}
			if d, err := request.Derive(shared.DeriveArgs{Attack: a.Name}); err != nil || d.Attack.Trains != a.Trains {
				t.Errorf("trains %v (%v), the registry says %v", d.Attack.Trains, err, a.Trains)
			}
		})
	}
	for _, bad := range []string{"", "melt", "FTLL"} {
		want := `attack "` + bad + `": want one of ` + strings.Join(train.Attacks(), ", ")
		if code, msg := post(`{"kind":"derive","derive":{"source":"abc","attack":"` + bad + `"}}`); code != http.StatusBadRequest || !strings.Contains(msg, want) {
			t.Errorf("attack %q: %d %q, want 400 saying %q", bad, code, msg, want)
		}
	}
}
