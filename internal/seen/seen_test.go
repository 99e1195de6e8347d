package seen

import (
	"fmt"
	"testing"
	"time"
)

func TestSetRemembersWithinWindow(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	s := New(10*time.Minute, 3, func() time.Time { return now })
	if !s.Add("a") || s.Add("a") {
		t.Fatal("a: first add must be new, second a replay")
	}
	if !s.Add("") || !s.Add("") {
		t.Fatal("the empty id is never remembered")
	}
	now = now.Add(11 * time.Minute)
	if !s.Add("a") {
		t.Fatal("a was not forgotten after the window")
	}
}

func TestSetIsBounded(t *testing.T) {
	t.Parallel()
	s := New(time.Hour, 100, nil)
	for i := range 1000 {
		s.Add(fmt.Sprint(i))
	}
	if s.Len() != 100 {
		t.Fatalf("Len = %d, want 100", s.Len())
	}
	if s.Add("999") || !s.Add("0") {
		t.Fatal("the newest ids must be kept and the oldest forgotten")
	}
}

func FuzzSetAdd(f *testing.F) {
	f.Add("a", "b")
	f.Fuzz(func(t *testing.T, a, b string) {
		s := New(time.Hour, 10, nil)
		s.Add(a)
		if a != "" && s.Add(a) {
			t.Fatalf("%q accepted twice", a)
		}
		if b != a && b != "" && !s.Add(b) {
			t.Fatalf("%q refused", b)
		}
	})
}
