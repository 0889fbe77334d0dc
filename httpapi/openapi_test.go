package httpapi_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/lockstep-io/lockstep/httpapi"
)

// TestOpenAPIDocumentsEveryRoute keeps the OpenAPI document true: it must be
// a valid OpenAPI 3 document, every route the server has must be in it,
// and it must document no route the server lacks.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(httpapi.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("invalid OpenAPI document: %v", err)
	}
	param := regexp.MustCompile(`:([a-z_]+)`)
	served := map[string]bool{}
	for _, r := range httpapi.New(httpapi.Config{}).Routes() {
		path := param.ReplaceAllString(r.Path, "{$1}")
		key := r.Method + " " + path
		served[key] = true
		item := doc.Paths.Find(path)
		if item == nil || item.GetOperation(r.Method) == nil {
			t.Errorf("route %s is not in openapi.yaml", key)
		}
	}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			if key := strings.ToUpper(method) + " " + path; !served[key] {
				t.Errorf("openapi.yaml documents %s, which the server does not have", key)
			}
		}
	}
}

func TestOpenAPIIsServed(t *testing.T) {
	base := devAgent(t, false)
	resp, err := http.Get(base + "/v1/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/yaml" || !bytes.Equal(body, httpapi.OpenAPI) {
		t.Fatalf("GET /v1/openapi.yaml = %d %q (%d bytes)", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
}
