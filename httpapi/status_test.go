package httpapi

import "testing"

func TestBracketed(t *testing.T) {
	for in, want := range map[string]string{"always [madvise] never\n": "madvise", "[always] madvise never": "always", "always madvise never": "", "]x[": ""} {
		got, ok := bracketed(in)
		if got != want || ok != (want != "") {
			t.Errorf("bracketed(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}
