package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/gofiber/fiber/v2"

	"github.com/taas-appliance/taas/control/store"
)

// neutronError is an error with the HTTP status and the NeutronError body
// upstream answers with. Handlers return it; errorHandler renders it.
type neutronError struct {
	Status  int
	Type    string // the upstream exception class name
	Message string
	// notImplemented renders the body under "NotImplementedError" instead of
	// "NeutronError", as upstream does for a driver's NotImplementedError.
	notImplemented bool
}

func (e *neutronError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message) }

// badRequest is webob's HTTPBadRequest, which every body and query
// validation failure upstream raises.
func badRequest(format string, a ...any) *neutronError {
	return &neutronError{Status: http.StatusBadRequest, Type: "HTTPBadRequest", Message: fmt.Sprintf(format, a...)}
}

func invalidInput(attr, reason string) *neutronError {
	return badRequest("Invalid input for %s. Reason: %s.", attr, reason)
}

func notFound(typ, format string, a ...any) *neutronError {
	return &neutronError{Status: http.StatusNotFound, Type: typ, Message: fmt.Sprintf(format, a...)}
}

func forbidden(typ, msg string) *neutronError {
	return &neutronError{Status: http.StatusForbidden, Type: typ, Message: msg}
}

func conflict(typ, msg string) *neutronError {
	return &neutronError{Status: http.StatusConflict, Type: typ, Message: msg}
}

// The messages below are upstream's, to the character (note the two
// spaces in "Tap Service  %s"): clients print them to users.
func errTapServiceNotFound(id string) error {
	return notFound("TapServiceNotFound", "Tap Service  %s does not exist", id)
}

func errTapFlowNotFound(id string) error {
	return notFound("TapFlowNotFound", "Tap Flow  %s does not exist", id)
}

func errPortNotFound(id string) error {
	return notFound("PortNotFound", "Port %s could not be found.", id)
}

func errNetworkNotFound(id string) error {
	return notFound("NetworkNotFound", "Network %s could not be found.", id)
}

// errPolicy is upstream's PolicyNotAuthorized for action, or for the
// attributes of action the caller may not set, as neutron's policy engine
// words the rule it checked: "rule:create_tap_service", "(rule:create_port
// and rule:create_port:binding:profile)".
func errPolicy(action string, attrs ...string) error {
	rule := "rule:" + action
	for _, a := range attrs {
		rule = "(" + rule + " and rule:" + action + ":" + a + ")"
	}
	return forbidden("PolicyNotAuthorized", rule+" is disallowed by policy")
}

var errResourceNotFound = notFound("HTTPNotFound", "The resource could not be found.")

type errorBody struct {
	Type    string `json:"type"`
	Message string `json:"message"`
	Detail  string `json:"detail"`
}

// errorHandler is the app's only writer of error bodies: it maps every
// error a handler or fiber itself returns to a status and a NeutronError
// body. Anything it does not recognise is an internal error: logged, and
// answered with upstream's generic 500 text.
func errorHandler(log *slog.Logger) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		var (
			ne *neutronError
			fe *fiber.Error
		)
		switch {
		case errors.As(err, &ne):
		case errors.As(err, &fe):
			ne = fiberError(fe)
		case errors.Is(err, store.ErrInvalidText): // PostgreSQL's text holds no NUL
			ne = badRequest("Invalid input: %v.", store.ErrInvalidText)
		case errors.Is(err, store.ErrBusy): // contention outlasted the retries
			log.Warn("request failed: database busy", "method", c.Method(), "path", c.Path(), "err", err)
			c.Set(fiber.HeaderRetryAfter, "1")
			ne = errDatabaseBusy
		case errors.Is(err, store.ErrOutcomeUnknown): // connection lost during COMMIT
			log.Warn("request failed: outcome unknown", "method", c.Method(), "path", c.Path(), "err", err)
			ne = errOutcomeUnknown
		case errors.Is(err, store.ErrUnavailable): // PostgreSQL down or cut off
			log.Warn("request failed: database unavailable", "method", c.Method(), "path", c.Path(), "err", err)
			ne = errDatabaseUnavailable
		default:
			log.Error("request failed", "method", c.Method(), "path", c.Path(), "err", err)
			ne = &neutronError{Status: http.StatusInternalServerError, Type: "HTTPInternalServerError",
				Message: "Request Failed: internal server error while processing your request."}
		}
		key := "NeutronError"
		if ne.notImplemented {
			key = "NotImplementedError"
		}
		body, jerr := json.Marshal(map[string]errorBody{key: {Type: ne.Type, Message: ne.Message}})
		if jerr != nil {
			return jerr
		}
		setRequestID(c)
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Status(ne.Status).Send(body)
	}
}

// errDatabaseUnavailable: the store's server cannot be reached (issue 14:
// PostgreSQL down, or this taasd cut off from it); the data plane goes on
// with its last plan meanwhile.
var errDatabaseUnavailable = &neutronError{Status: http.StatusServiceUnavailable, Type: "ServiceUnavailable",
	Message: "The database is unavailable. Please try again at a later time."}

// errDatabaseBusy: the request's write conflicted with concurrent writes
// (other taasd on the same PostgreSQL) in every attempt; answered with
// Retry-After.
var errDatabaseBusy = &neutronError{Status: http.StatusServiceUnavailable, Type: "ServiceUnavailable",
	Message: "The database is busy with concurrent requests. Please try again at a later time."}

// errOutcomeUnknown: the connection to PostgreSQL was lost while it
// committed the request's write, and the server could not be asked whether
// it did: the client should read the resource before trying again.
var errOutcomeUnknown = &neutronError{Status: http.StatusServiceUnavailable, Type: "ServiceUnavailable",
	Message: "The database connection was lost while the request was committed: its outcome is unknown. Read the resource before trying again."}

var errMethodNotAllowed = &neutronError{Status: http.StatusMethodNotAllowed, Type: "HTTPMethodNotAllowed",
	Message: "The server could not comply with the request since it is either malformed or otherwise incorrect."}

// fiberError maps fiber's own errors (no route, wrong method) and those
// fasthttp finds while reading a request (body or headers too large, a
// malformed request, a timeout) to webob's classes.
func fiberError(fe *fiber.Error) *neutronError {
	switch fe.Code {
	case http.StatusNotFound:
		return errResourceNotFound
	case http.StatusMethodNotAllowed:
		return errMethodNotAllowed
	case http.StatusRequestEntityTooLarge:
		return &neutronError{Status: fe.Code, Type: "HTTPRequestEntityTooLarge", Message: "Request is too large."}
	case http.StatusRequestHeaderFieldsTooLarge:
		return &neutronError{Status: fe.Code, Type: "HTTPRequestHeaderFieldsTooLarge",
			Message: "The request header fields were too large."}
	case http.StatusRequestTimeout:
		return &neutronError{Status: fe.Code, Type: "HTTPRequestTimeout",
			Message: "The server has waited too long for the request to be sent by the client."}
	case http.StatusBadRequest:
		// fasthttp's message quotes the request's bytes: not echoed back.
		return errMalformed
	}
	return &neutronError{Status: fe.Code, Type: "HTTPError", Message: fe.Message}
}
