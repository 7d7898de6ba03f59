/* The phone's outbox: reports kept in IndexedDB until intake has them. Loaded by the pages and by the service
   worker (importScripts), so both send the same way. Each report keeps the Idempotency-Key made when it was first
   saved, so a resend after a lost answer, a closed tab or an expired session makes no second case. */
(function (scope) {
  'use strict';
  var DB = 'waspada', STORE = 'outbox';

  function open() {
    return new Promise(function (resolve, reject) {
      var req = indexedDB.open(DB, 1);
      req.onupgradeneeded = function () { req.result.createObjectStore(STORE, { keyPath: 'id' }); };
      req.onsuccess = function () { resolve(req.result); };
      req.onerror = function () { reject(req.error); };
    });
  }

  function tx(mode, work) {
    return open().then(function (db) {
      return new Promise(function (resolve, reject) {
        var t = db.transaction(STORE, mode), store = t.objectStore(STORE), result;
        Promise.resolve(work(store)).then(function (r) { result = r; });
        t.oncomplete = function () { db.close(); resolve(result); };
        t.onerror = function () { db.close(); reject(t.error); };
        t.onabort = function () { db.close(); reject(t.error); };
      });
    });
  }

  function request(req) {
    return new Promise(function (resolve, reject) {
      req.onsuccess = function () { resolve(req.result); };
      req.onerror = function () { reject(req.error); };
    });
  }

  function all() {
    return tx('readonly', function (s) { return request(s.getAll()); }).then(function (items) {
      return (items || []).sort(function (a, b) { return a.created_at < b.created_at ? 1 : -1; });
    });
  }
  function get(id) { return tx('readonly', function (s) { return request(s.get(id)); }); }
  function put(item) { return tx('readwrite', function (s) { s.put(item); }); }
  function remove(id) { return tx('readwrite', function (s) { s.delete(id); }); }

  function newKey() {
    if (scope.crypto && scope.crypto.randomUUID) return scope.crypto.randomUUID();
    var b = new Uint8Array(16); scope.crypto.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) { return ('0' + x.toString(16)).slice(-2); }).join('');
  }

  /* Save a new report, or a fixed one (a refused report gets a new key: intake created nothing for it). */
  function save(body, owner, summary, id) {
    var now = new Date().toISOString();
    return (id ? get(id) : Promise.resolve(null)).then(function (old) {
      var item = old || { id: newKey(), created_at: now, attempts: 0 };
      if (!old || old.status === 'refused') item.key = newKey();
      item.body = body; item.owner = owner; item.summary = summary;
      item.status = 'waiting'; item.note = 'signal'; item.reason = null; item.fields = null; item.updated_at = now;
      return put(item).then(function () { return item; });
    });
  }

  function changed() {
    try { new BroadcastChannel('waspada-outbox').postMessage('changed'); } catch (e) { /* old browsers */ }
  }

  function withLock(work) {
    if (scope.navigator && scope.navigator.locks) {
      return scope.navigator.locks.request('waspada-outbox', work);
    }
    return work();
  }

  function session() {
    return fetch('/api/session', { credentials: 'same-origin', cache: 'no-store' }).then(function (r) {
      if (r.status === 401) return null;
      if (!r.ok) throw new Error('session ' + r.status);
      return r.json();
    });
  }

  function note(item, what) { item.note = what; item.updated_at = new Date().toISOString(); return put(item); }

  /* Send every waiting report of the signed-in person, one at a time. Returns what stopped it, if anything. */
  function flush() {
    return withLock(function () {
      return all().then(function (items) {
        var waiting = items.filter(function (i) { return i.status === 'waiting'; }).reverse();
        if (!waiting.length) return { done: true };
        return session().then(function (who) {
          if (!who) {
            return Promise.all(waiting.map(function (i) { return note(i, 'signin'); }))
              .then(function () { return { signin: true }; });
          }
          var mine = waiting.filter(function (i) { return !i.owner || i.owner === who.username; });
          return sendEach(mine, who);
        }, function () { return { offline: true }; });
      });
    }).then(function (outcome) { changed(); return outcome; });
  }

  function sendEach(items, who) {
    if (!items.length) return Promise.resolve({ done: true });
    var item = items[0];
    return get(item.id).then(function (current) {
      if (!current || current.status !== 'waiting') return sendEach(items.slice(1), who);
      current.attempts = (current.attempts || 0) + 1;
      return put(current).then(function () {
        return fetch('/api/reports', {
          method: 'POST', credentials: 'same-origin', cache: 'no-store',
          headers: { 'Content-Type': 'application/json', 'Idempotency-Key': current.key, 'X-CSRF-Token': who.csrf },
          body: JSON.stringify(current.body)
        });
      }).then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (answer) {
          return settle(current, r.status, answer);
        });
      }, function () {
        return note(current, 'signal').then(function () { return { offline: true }; });
      }).then(function (stop) { return stop || sendEach(items.slice(1), who); });
    });
  }

  function settle(item, status, answer) {
    var now = new Date().toISOString();
    if (status === 201) {
      // Sent: keep only the case number and what the list shows; the people and the story leave the phone.
      return put({ id: item.id, key: item.key, status: 'sent', owner: item.owner, created_at: item.created_at,
        updated_at: now, sent_at: now, case_number: answer.case_number, case_id: answer.case_id,
        summary: item.summary, attempts: item.attempts }).then(function () { return null; });
    }
    if (status === 401) return note(item, 'signin').then(function () { return { signin: true }; });
    if (status === 422 || status === 409 || status === 400 || status === 413) {
      var error = answer.error || {};
      item.status = 'refused'; item.reason = error.message || String(status); item.fields = answer.fields || null;
      item.updated_at = now;
      return put(item).then(function () { return null; });
    }
    return note(item, 'retry').then(function () { return { retry: true }; });
  }

  scope.WaspadaOutbox = { all: all, get: get, save: save, remove: remove, flush: flush, changed: changed };
})(self);
