package schemaregistry

import (
	"fmt"
	"net/http"
)

// Confluent error codes. Clients switch on these numbers (franz-go exposes
// them as sr.ResponseError.ErrorCode), so they must match Confluent's values
// exactly; the HTTP status is the code's first three digits.
const (
	codeSubjectNotFound  = 40401
	codeVersionNotFound  = 40402
	codeSchemaNotFound   = 40403
	codeInvalidSchema    = 42201
	codeInvalidVersion   = 42202
	codeReferenceExists  = 42206
	codeInternal         = 50001
	codeBadRequest       = http.StatusBadRequest
	codeNotFound         = http.StatusNotFound
	codeMethodNotAllowed = http.StatusMethodNotAllowed
)

// apiError is an error that knows how it is reported over HTTP. Handlers
// return it (possibly wrapped) and ServeHTTP renders it as Confluent's
// {"error_code", "message"} body; any other error becomes a 500 with code
// 50001, so an unexpected failure is still reported in the shape clients
// parse.
type apiError struct {
	status  int
	code    int
	message string
	err     error // the underlying cause, kept for errors.Is/As
}

func (e *apiError) Error() string { return e.message }

func (e *apiError) Unwrap() error { return e.err }

// errorBody is the JSON shape of every error response.
type errorBody struct {
	ErrorCode int    `json:"error_code"`
	Message   string `json:"message"`
}

func errSubjectNotFound(subject string) *apiError {
	return &apiError{
		status:  http.StatusNotFound,
		code:    codeSubjectNotFound,
		message: fmt.Sprintf("Subject '%s' not found.", subject),
	}
}

func errVersionNotFound(subject string, version int) *apiError {
	return &apiError{
		status:  http.StatusNotFound,
		code:    codeVersionNotFound,
		message: fmt.Sprintf("Version %d not found for subject '%s'.", version, subject),
	}
}

func errSchemaNotFound(message string) *apiError {
	return &apiError{status: http.StatusNotFound, code: codeSchemaNotFound, message: message}
}

func errInvalidSchema(err error) *apiError {
	return &apiError{
		status:  http.StatusUnprocessableEntity,
		code:    codeInvalidSchema,
		message: fmt.Sprintf("Invalid schema: %v", err),
		err:     err,
	}
}

func errInvalidVersion(version string) *apiError {
	return &apiError{
		status: http.StatusUnprocessableEntity,
		code:   codeInvalidVersion,
		message: fmt.Sprintf("The specified version '%s' is not a valid version id. "+
			"Allowed values are between [1, 2^31-1] and the string \"latest\"", version),
	}
}

func errReferenceExists(subject string, version int, ids []int) *apiError {
	return &apiError{
		status: http.StatusUnprocessableEntity,
		code:   codeReferenceExists,
		message: fmt.Sprintf("One or more references exist to the schema {subject=%s, version=%d}: referenced by schema ids %v",
			subject, version, ids),
	}
}

func errBadRequest(err error) *apiError {
	return &apiError{
		status:  http.StatusBadRequest,
		code:    codeBadRequest,
		message: err.Error(),
		err:     err,
	}
}

func errStatus(status int, message string) *apiError {
	return &apiError{status: status, code: status, message: message}
}
