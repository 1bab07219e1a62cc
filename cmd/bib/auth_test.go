package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/bib-project/bib/bridge"
)

func testAuth(t *testing.T, now func() time.Time) *auth {
	t.Helper()
	hash, _ := bcrypt.GenerateFromPassword([]byte("hashed-pw"), bcrypt.MinCost)
	a, err := newAuth([]bridge.Supervisor{
		{User: "plain", Password: "plain-pw", Monitors: []string{"1XXX"}},
		{User: "hashed", PasswordHash: string(hash), Monitors: []string{"*"}},
		{User: "sipOnly", HA1: strings.Repeat("ab", 16)},
	}, nil, 30*time.Minute, slog.New(slog.NewTextHandler(io.Discard, nil)), now)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func bearer(tok string) *http.Request {
	r := httptest.NewRequest("GET", "/api/v1/calls", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	return r
}

func TestAuthLogin(t *testing.T) {
	a := testAuth(t, nil)
	for _, tc := range []struct {
		user, pw string
		ok       bool
	}{
		{"plain", "plain-pw", true},
		{"hashed", "hashed-pw", true},
		{"plain", "wrong", false},
		{"hashed", "", false},
		{"nobody", "plain-pw", false},
		{"sipOnly", "", false}, // no web password
	} {
		tok, err := a.login(tc.user, tc.pw)
		if (err == nil) != tc.ok {
			t.Errorf("login %s/%q: err %v", tc.user, tc.pw, err)
			continue
		}
		if tc.ok {
			sup, ok := a.session(bearer(tok))
			if !ok || sup.User != tc.user {
				t.Errorf("session of %s: %v %+v", tc.user, ok, sup)
			}
		}
	}
	// The plain password is not kept: what is stored is a bcrypt hash.
	if u := a.users["plain"]; bcrypt.CompareHashAndPassword(u.hash, []byte("plain-pw")) != nil {
		t.Error("plain password not hashed")
	}
	if _, ok := a.session(bearer("forged")); ok {
		t.Error("a forged token was accepted")
	}
}

func TestAuthInactivityExpiry(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	a := testAuth(t, func() time.Time { return now })
	tok, err := a.login("plain", "plain-pw")
	if err != nil {
		t.Fatal(err)
	}
	// Used every 29 minutes, the session lives on.
	for range 4 {
		now = now.Add(29 * time.Minute)
		if _, ok := a.session(bearer(tok)); !ok {
			t.Fatalf("session expired while in use at %v", now)
		}
	}
	// 30 minutes idle: gone, and stays gone.
	now = now.Add(30 * time.Minute)
	if _, ok := a.session(bearer(tok)); ok {
		t.Fatal("session outlived 30 minutes of inactivity")
	}
	now = now.Add(-time.Hour)
	if _, ok := a.session(bearer(tok)); ok {
		t.Fatal("an expired session came back")
	}
	// Logout ends a session at once; the cookie works like the header.
	tok, _ = a.login("hashed", "hashed-pw")
	r := httptest.NewRequest("POST", "/api/v1/logout", nil)
	r.AddCookie(&http.Cookie{Name: sessionCookie, Value: tok})
	if _, ok := a.session(r); !ok {
		t.Fatal("cookie not accepted")
	}
	a.logout(r)
	if _, ok := a.session(bearer(tok)); ok {
		t.Fatal("session survived logout")
	}
}

func TestAuthDisabledWithoutSupervisors(t *testing.T) {
	a, err := newAuth(nil, nil, 0, slog.New(slog.DiscardHandler), nil)
	if err != nil || a.enabled() {
		t.Fatalf("auth enabled with no supervisors (%v)", err)
	}
	h := a.middleware(nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(299) }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/calls", nil))
	if rec.Code != 299 {
		t.Fatalf("open API answered %d", rec.Code)
	}
}

func TestAuthLoginRoute(t *testing.T) {
	a := testAuth(t, nil)
	mux := http.NewServeMux()
	a.registerRoutes(mux)
	post := func(body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("POST", "/api/v1/login", strings.NewReader(body)))
		return rec
	}
	if rec := post(`{"user":"plain","password":"bad"}`); rec.Code != 401 || !strings.Contains(rec.Body.String(), "bad_credentials") {
		t.Fatalf("bad password: %d %s", rec.Code, rec.Body)
	}
	if rec := post(`not json`); rec.Code != 400 {
		t.Fatalf("bad body: %d", rec.Code)
	}
	rec := post(`{"user":"plain","password":"plain-pw"}`)
	if rec.Code != 200 {
		t.Fatalf("login: %d %s", rec.Code, rec.Body)
	}
	c := rec.Result().Cookies()
	if len(c) != 1 || c[0].Name != sessionCookie || !c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie %+v", c)
	}
	if !strings.Contains(rec.Body.String(), `"token"`) {
		t.Fatalf("no token in %s", rec.Body)
	}
}
