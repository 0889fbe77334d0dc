package httpapi

import (
	_ "embed"
	"net/http"

	"github.com/julienschmidt/httprouter"
)

// OpenAPI is the API's OpenAPI 3 document. A test checks it is valid and
// that it documents every route the server has.
//
//go:embed openapi.yaml
var OpenAPI []byte

// rawBody is written as is, with its content type.
type rawBody struct {
	contentType string
	data        []byte
}

// GET /v1/openapi.yaml
func (s *Server) openAPI(*http.Request, httprouter.Params, []byte) (any, error) {
	return &rawBody{contentType: "application/yaml", data: OpenAPI}, nil
}
