package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gofiber/fiber/v2"

	"github.com/taas-appliance/taas/control/store"
)

// Typed resources (issue 10): every collection is served by one generic
// handler set (list, show, create, update, delete) over a kind, which
// says what is truly specific to the resource: its attribute table
// (validation order and Neutron's texts, body.go), the body it decodes
// into, its view, who may read it, and its create, update and delete
// rules over typed store methods.
//
//	request -> decodeBody (attribute table, map) -> decodeInto (body struct B)
//	        -> rule (create/update/remove, store rows T) -> view V -> encoding/json

// kind describes one collection: T is the store row, B the validated
// request body, V the view the API shows (its JSON tags are the
// attribute names, in sorted order).
type kind[T, B, V any] struct {
	s   *Server
	res *resource
	// read is the rule of list and show (Identity.member for the TaaS
	// resources, Identity.reader for ports); nil lets anybody read, as
	// networks, whose store query scopes them.
	read func(Identity) bool
	// notFound is the 404 of an id the caller cannot see.
	notFound func(id string) error
	list     func(ctx context.Context, project string) ([]T, error)
	get      func(ctx context.Context, project, id string) (T, error)
	view     func(T) V
	// ref names a row for events.
	ref func(T) store.Ref

	// forbidVisible answers a non-member's update or delete of a row it
	// can read with 403 PolicyNotAuthorized instead of 404, as upstream
	// does when the write rule fails on a row the caller may get (§2.11):
	// tap mirrors, which readers may get.
	forbidVisible bool
	// noBulk refuses a bulk create (400 "Bulk operation not supported").
	noBulk bool
	// precheck, when set, checks a create's body before its transaction.
	precheck func(id Identity, b B) error
	// create checks and inserts one resource of a create in tx.
	create func(tx *store.Tx, id Identity, b B) (T, error)
	// update applies b to the row id of the caller's scope; the store's
	// ErrNotFound becomes notFound.
	update func(ctx context.Context, id Identity, rowID string, b B) (T, error)
	// remove deletes the row id of project with what cascades from it,
	// which it returns as delete events.
	remove func(ctx context.Context, project, id string) (T, []Event, error)
}

// opt is a body attribute that PUT may leave out: Set says whether the
// body named it, null included (V is then the zero value).
type opt[T any] struct {
	Set bool
	V   T
}

// UnmarshalJSON is called for every attribute present, null included.
func (o *opt[T]) UnmarshalJSON(b []byte) error {
	o.Set = true
	if string(b) == "null" {
		var zero T
		o.V = zero
		return nil
	}
	return json.Unmarshal(b, &o.V)
}

// decodeInto turns one validated attribute map into its body struct.
// Validation has fixed every value's type, so a failure is a bug in an
// attribute table.
func decodeInto[B any](r *resource, m map[string]any) (B, error) {
	var b B
	raw, err := json.Marshal(m)
	if err == nil {
		err = json.Unmarshal(raw, &b)
	}
	if err != nil {
		return b, fmt.Errorf("decode %s body: %w", r.singular, err)
	}
	return b, nil
}

// decode processes a POST or PUT body (decodeBody) into body structs.
func (k *kind[T, B, V]) decode(c *fiber.Ctx, create bool, id Identity) ([]B, bool, error) {
	ms, bulk, err := k.res.decodeBody(c.Body(), create, id)
	if err != nil {
		return nil, bulk, err
	}
	bs := make([]B, len(ms))
	for i, m := range ms {
		if bs[i], err = decodeInto[B](k.res, m); err != nil {
			return nil, bulk, err
		}
	}
	return bs, bulk, nil
}

func (k *kind[T, B, V]) mayRead(id Identity) bool { return k.read == nil || k.read(id) }

func (k *kind[T, B, V]) event(t T, action string) Event {
	r := k.ref(t)
	return Event{Resource: k.res.singular, ID: r.ID, Action: action, ProjectID: r.ProjectID}
}

// handleList answers GET on the collection: the caller's rows, from the
// list cache while the store is unchanged.
func (k *kind[T, B, V]) handleList(c *fiber.Ctx) error {
	id := identity(c)
	if !k.mayRead(id) {
		return renderList(c, k.res, &listRows[V]{})
	}
	ctx := c.UserContext()
	rows, err := loadRows(k.s.lists, k.s.st, listKey{k.res.plural, id.scope()}, func() (*listRows[V], error) {
		ts, err := k.list(ctx, id.scope())
		if err != nil {
			return nil, err
		}
		vs := make([]V, len(ts))
		for i, t := range ts {
			vs[i] = k.view(t)
		}
		return newListRows(k.res, vs)
	})
	if err != nil {
		return err
	}
	return renderList(c, k.res, rows)
}

func (k *kind[T, B, V]) handleShow(c *fiber.Ctx) error {
	t, err := k.lookup(c)
	if err != nil {
		return err
	}
	return renderOne(c, fiber.StatusOK, k.res, k.view(t))
}

// lookup returns the row of c's :id as show gets it: the same 404 for an
// id that does not exist, that is another project's, or that the caller
// may not read. Live captures find their target through it.
func (k *kind[T, B, V]) lookup(c *fiber.Ctx) (T, error) {
	id := identity(c)
	t, err := k.get(c.UserContext(), id.scope(), c.Params("id"))
	if errors.Is(err, store.ErrNotFound) || err == nil && !k.mayRead(id) {
		return t, k.notFound(c.Params("id"))
	}
	return t, err
}

// handleCreate answers a create: one resource, or several from a bulk
// body. Every item is checked (quota first, as upstream reserves quota
// before it creates) and inserted in one write transaction, so a bulk is
// all or nothing and invisible to other clients until it commits; only
// then does the data plane hear of it and the events stream announce it
// (issue 9).
func (k *kind[T, B, V]) handleCreate(c *fiber.Ctx) error {
	id := identity(c)
	if !id.member() {
		return errPolicy("create_" + k.res.singular)
	}
	bs, bulk, err := k.decode(c, true, id)
	if err != nil {
		return err
	}
	if bulk && k.noBulk {
		return badRequest("Bulk operation not supported")
	}
	if k.precheck != nil {
		for _, b := range bs {
			if err := k.precheck(id, b); err != nil {
				return err
			}
		}
	}
	projects := make([]string, len(bs))
	for i, b := range bs {
		projects[i] = bodyProject(b)
	}
	done := make([]T, 0, len(bs))
	err = k.s.st.Write(c.UserContext(), func(tx *store.Tx) error {
		done = done[:0] // on PostgreSQL a transaction may run again (store.Write)
		if err := k.s.checkQuota(tx, k.res.singular, projects); err != nil {
			return err
		}
		for _, b := range bs {
			t, err := k.create(tx, id, b)
			if err != nil {
				return err
			}
			done = append(done, t)
		}
		return nil
	})
	if err != nil {
		return err
	}
	views := make([]V, len(done))
	evs := make([]Event, len(done))
	for i, t := range done {
		views[i], evs[i] = k.view(t), k.event(t, "create")
	}
	k.s.afterChange(evs...)
	if bulk {
		return renderJSON(c, fiber.StatusCreated, map[string]any{k.res.plural: views})
	}
	return renderOne(c, fiber.StatusCreated, k.res, views[0])
}

func (k *kind[T, B, V]) handleUpdate(c *fiber.Ctx) error {
	id := identity(c)
	bs, _, err := k.decode(c, false, id)
	if err != nil {
		return err
	}
	if !id.member() {
		return k.refuse(c, id, "update")
	}
	t, err := k.update(c.UserContext(), id, c.Params("id"), bs[0])
	if errors.Is(err, store.ErrNotFound) {
		return k.notFound(c.Params("id"))
	}
	if err != nil {
		return err
	}
	k.s.afterChange(k.event(t, "update"))
	return renderOne(c, fiber.StatusOK, k.res, k.view(t))
}

func (k *kind[T, B, V]) handleDelete(c *fiber.Ctx) error {
	if err := noBody(c); err != nil {
		return err
	}
	id := identity(c)
	if !id.member() {
		return k.refuse(c, id, "delete")
	}
	t, evs, err := k.remove(c.UserContext(), id.scope(), c.Params("id"))
	if errors.Is(err, store.ErrNotFound) {
		return k.notFound(c.Params("id"))
	}
	if err != nil {
		return err
	}
	k.s.afterChange(append(evs, k.event(t, "delete"))...)
	return c.SendStatus(fiber.StatusNoContent)
}

// refuse answers a write by a caller that is no member: 404, or, with
// forbidVisible, 403 when it may read the row.
func (k *kind[T, B, V]) refuse(c *fiber.Ctx, id Identity, action string) error {
	if k.forbidVisible && k.mayRead(id) {
		_, err := k.get(c.UserContext(), id.scope(), c.Params("id"))
		if err == nil {
			return errPolicy(action + "_" + k.res.singular)
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return k.notFound(c.Params("id"))
}

// projectBody is the project_id every body struct carries.
type projectBody struct {
	ProjectID string `json:"project_id"`
}

func (p projectBody) project() string { return p.ProjectID }

// bodyProject is the project a create body names (processItem always
// sets it).
func bodyProject(b any) string {
	if p, ok := b.(interface{ project() string }); ok {
		return p.project()
	}
	return ""
}

// noBody rejects a DELETE with a body, as upstream does.
func noBody(c *fiber.Ctx) error {
	if len(c.Body()) > 0 {
		return badRequest("Request body is not supported in DELETE.")
	}
	return nil
}

// refEvents are the delete events of rows a cascade removed.
func refEvents(resource string, refs []store.Ref) []Event {
	var evs []Event
	for _, r := range refs {
		evs = append(evs, Event{Resource: resource, ID: r.ID, Action: "delete", ProjectID: r.ProjectID})
	}
	return evs
}
