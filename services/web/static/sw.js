/* Service worker: keeps the report form, the outbox and the assets on the phone, and sends the outbox when the
   browser says the connection is back (Background Sync). Pages with personal data are never cached. */
'use strict';
var VERSION = '__VERSION__';
var CACHE = 'waspada-' + VERSION;
var PAGES = ['/report', '/outbox', '/offline'];
var ASSETS = ['app.css', 'app.js', 'outbox.js', 'icon.svg'].map(function (f) { return '/static/' + f + '?v=' + VERSION; });

importScripts('/static/outbox.js?v=' + VERSION);

function cachePages(cache) {
  return Promise.all(PAGES.map(function (path) {
    return fetch(path, { credentials: 'same-origin' }).then(function (r) {
      if (r.ok && !r.redirected) return cache.put(path, r);
    }).catch(function () { /* offline or signed out: cached on the next visit */ });
  }));
}

self.addEventListener('install', function (event) {
  event.waitUntil(caches.open(CACHE).then(function (cache) {
    return cache.addAll(ASSETS).then(function () { return cachePages(cache); });
  }).then(function () { return self.skipWaiting(); }));
});

self.addEventListener('activate', function (event) {
  event.waitUntil(caches.keys().then(function (names) {
    return Promise.all(names.filter(function (n) { return n.indexOf('waspada-') === 0 && n !== CACHE; })
      .map(function (n) { return caches.delete(n); }));
  }).then(function () { return self.clients.claim(); }));
});

self.addEventListener('fetch', function (event) {
  var req = event.request, url = new URL(req.url);
  if (req.method !== 'GET' || url.origin !== self.location.origin) return;
  if (url.pathname.indexOf('/static/') === 0) {
    event.respondWith(caches.match(req).then(function (hit) { return hit || fetch(req); }));
    return;
  }
  if (req.mode !== 'navigate') return;  // /api/* and the rest go to the network untouched
  var cacheable = PAGES.indexOf(url.pathname) >= 0 && !url.search;
  event.respondWith(fetch(req).then(function (response) {
    if (cacheable && response.ok && !response.redirected) {
      var copy = response.clone();
      caches.open(CACHE).then(function (cache) { cache.put(url.pathname, copy); });
    }
    return response;
  }, function () {
    return caches.match(cacheable ? url.pathname : '/offline').then(function (hit) {
      return hit || caches.match('/offline').then(function (off) {
        return off || new Response('offline', { status: 503, headers: { 'Content-Type': 'text/plain' } });
      });
    });
  }));
});

self.addEventListener('sync', function (event) {
  if (event.tag === 'outbox') event.waitUntil(self.WaspadaOutbox.flush());
});

self.addEventListener('message', function (event) {
  var what = event.data && event.data.type;
  if (what === 'flush') event.waitUntil(self.WaspadaOutbox.flush());
  if (what === 'warm') event.waitUntil(caches.open(CACHE).then(cachePages));
  if (what === 'forget') {  // signed out: the cached pages belonged to that person
    event.waitUntil(caches.open(CACHE).then(function (cache) {
      return Promise.all(['/report', '/outbox'].map(function (p) { return cache.delete(p); }));
    }));
  }
});
