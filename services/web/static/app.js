/* The pages' behaviour: service worker, offline banner, the report form (saved to the outbox first), the outbox
   list. Plain JavaScript, no inline script (CSP). Words come from the page's #strings block, in its language. */
(function () {
  'use strict';
  var Outbox = window.WaspadaOutbox;
  var T = JSON.parse((document.getElementById('strings') || { textContent: '{}' }).textContent);
  var page = document.body.dataset.page;
  var owner = document.body.dataset.owner || null;

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $$(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text != null) e.textContent = text;  // never innerHTML: what people typed stays text
    return e;
  }

  /* --- service worker and connection ----------------------------------------------------------------- */
  var worker = null;
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('/sw.js', { scope: '/' }).then(function () {
      return navigator.serviceWorker.ready;
    }).then(function (reg) {
      worker = reg;
      if (!reg.active) return;
      if (page === 'login' && $('[data-signed-out]')) reg.active.postMessage({ type: 'forget' });
      else if (owner) reg.active.postMessage({ type: 'warm' });
    }).catch(function () { /* pages still work online */ });
  }
  function requestSync() {
    if (worker && worker.sync) worker.sync.register('outbox').catch(function () {});
  }

  function showConnection() {
    var banner = $('[data-offline-banner]');
    if (banner) banner.hidden = navigator.onLine;
  }
  window.addEventListener('online', function () { showConnection(); send(); });
  window.addEventListener('offline', showConnection);
  showConnection();

  /* --- the outbox ------------------------------------------------------------------------------------ */
  var sending = null;
  function send() {
    if (!owner || !Outbox) return Promise.resolve();
    if (!sending) {
      sending = Outbox.flush().catch(function () {}).then(function (r) { sending = null; refresh(); return r; });
    }
    return sending;
  }

  function refresh() {
    if (!Outbox) return Promise.resolve();
    return Outbox.all().then(function (items) {
      var open = items.filter(function (i) { return i.status !== 'sent'; }).length;
      $$('[data-outbox-count]').forEach(function (c) { c.textContent = open; c.hidden = !open; });
      if (page === 'outbox') renderOutbox(items);
    });
  }

  try {
    new BroadcastChannel('waspada-outbox').onmessage = function () { refresh(); };
  } catch (e) { /* old browsers: the page refreshes after its own sends */ }

  function offsetMinutes(tz) {
    var sign = tz[0] === '-' ? -1 : 1;
    return sign * (parseInt(tz.slice(1, 3), 10) * 60 + parseInt(tz.slice(4, 6), 10));
  }
  var zoneOffset = offsetMinutes(document.body.dataset.tz || '+07:00');
  function when(iso) {
    // In the reporter's zone (WIB/WITA/WIT), whatever the phone's own clock zone is.
    var d = new Date(new Date(iso).getTime() + zoneOffset * 60000);
    if (isNaN(d)) return iso;
    var text = d.toLocaleString(document.documentElement.lang === 'en' ? 'en-GB' : 'id-ID',
      { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', timeZone: 'UTC' });
    return text + ' ' + (document.body.dataset.zone || '');
  }

  function summaryText(s) {
    if (typeof s === 'string') return s;  // saved by an older version of this page
    var types = (s.types || []).map(function (t) { return (T.types || {})[t] || t; });
    return [s.village, when(s.at)].concat(types).join(' · ');
  }

  function renderOutbox(items) {
    var list = $('[data-outbox-list]');
    list.textContent = '';
    if (!items.length) { list.appendChild(el('li', { 'class': 'empty' }, T.empty)); return; }
    items.forEach(function (item) {
      var li = el('li', { 'class': 'item ' + item.status, 'data-status': item.status, 'data-id': item.id });
      var head = el('p', { 'class': 'head' });
      head.appendChild(el('span', { 'class': 'badge' }, T[item.status]));
      head.appendChild(document.createTextNode(' ' + T.saved_at + ' ' + when(item.created_at)));
      li.appendChild(head);
      if (item.summary) li.appendChild(el('p', { 'class': 'summary' }, summaryText(item.summary)));
      if (item.status === 'sent') {
        var num = el('p', {}, T.case_number + ': ');
        num.appendChild(el('strong', { 'data-case-number': '' }, item.case_number));
        li.appendChild(num);
      } else if (item.status === 'waiting') {
        li.appendChild(el('p', { 'class': 'note' }, T['waiting_' + (item.note || 'signal')] || T.waiting_signal));
        if (item.note === 'signin') li.appendChild(el('a', { href: '/login', 'class': 'button' }, T.sign_in));
      } else if (item.status === 'refused') {
        li.appendChild(el('p', { 'class': 'error' }, T.reason + ': ' + (item.reason || '')));
        var fields = item.fields || {};
        var ul = el('ul', { 'class': 'field-list' });
        Object.keys(fields).forEach(function (f) { ul.appendChild(el('li', {}, fields[f])); });
        if (ul.children.length) li.appendChild(ul);
        li.appendChild(el('a', { href: '/report?edit=' + encodeURIComponent(item.id), 'class': 'button primary' }, T.fix));
        var del = el('button', { type: 'button', 'class': 'link' }, T.remove);
        del.addEventListener('click', function () {
          if (window.confirm(T.confirm_remove)) Outbox.remove(item.id).then(refresh);
        });
        li.appendChild(del);
      }
      list.appendChild(li);
    });
  }

  var sendNow = $('[data-send-now]');
  if (sendNow) sendNow.addEventListener('click', function () {
    $('[data-outbox-status]').textContent = T.sending;
    send().then(function () { $('[data-outbox-status]').textContent = ''; });
  });

  /* --- the report form ------------------------------------------------------------------------------- */
  var form = document.getElementById('report');
  if (form) setUpForm(form);

  function setUpForm(form) {
    var persons = $('[data-persons]', form);
    var template = document.getElementById('person-template');
    var editing = new URLSearchParams(location.search).get('edit');

    function addPerson(role) {
      var i = $$('.person', persons).length;
      var html = template.innerHTML.split('__i__').join(String(i));  // our own template, no typed text
      var holder = document.createElement('div');
      holder.innerHTML = html;
      var fs = holder.firstElementChild;
      $('select', fs).value = role;
      persons.appendChild(fs);
      return fs;
    }
    function renumber() {
      $$('.person', persons).forEach(function (fs, i) {
        var old = fs.dataset.index;
        if (String(old) === String(i)) return;
        fs.dataset.index = i;
        $$('[name],[id],[for],[data-field],[data-error-for],[aria-describedby]', fs).concat([fs]).forEach(function (e) {
          ['name', 'id', 'for', 'data-field', 'data-error-for', 'aria-describedby'].forEach(function (a) {
            var v = e.getAttribute(a);
            if (v) e.setAttribute(a, v.split('persons.' + old).join('persons.' + i).split('persons-' + old).join('persons-' + i)
              .split('p' + old + '-').join('p' + i + '-'));
          });
        });
      });
    }
    function isEmpty(fs) {
      return $$('input', fs).every(function (i) { return !i.value.trim(); });
    }

    form.addEventListener('click', function (e) {
      var add = e.target.closest('[data-add-person]');
      if (add) { $('input', addPerson(add.dataset.addPerson)).focus(); }
      var rm = e.target.closest('[data-remove-person]');
      if (rm) { rm.closest('.person').remove(); renumber(); }
    });

    function now() {
      return new Date(Date.now() + zoneOffset * 60000).toISOString().slice(0, 16);
    }
    function resetForm() {
      form.reset();
      persons.textContent = '';
      addPerson('potential_victim');
      form.observed_at.value = now();
      clearErrors();
    }

    function collect() {
      var fd = new FormData(form), body = {};
      body.village_code = fd.get('village_code');
      var seen = fd.get('observed_at') || '';
      body.observed_at = seen ? (seen.length === 16 ? seen + ':00' : seen) + form.dataset.tz : '';
      body.suspected_types = fd.getAll('suspected_types');
      body.indicators = fd.getAll('indicators');
      body.narrative = (fd.get('narrative') || '').trim();
      body.persons = $$('.person', persons).map(function (fs, i) {
        var p = { role: fd.get('persons.' + i + '.role') };
        ['name', 'nik', 'phone', 'age'].forEach(function (k) {
          var v = (fd.get('persons.' + i + '.' + k) || '').trim();
          if (k === 'nik') v = v.replace(/[\s.-]/g, '');
          if (v) p[k] = k === 'age' && /^\d+$/.test(v) ? parseInt(v, 10) : v;
        });
        return p;
      });
      var dep = {};
      ['planned_date', 'port', 'destination_country'].forEach(function (k) {
        var v = (fd.get('departure.' + k) || '').trim();
        if (v) dep[k] = v;
      });
      if (Object.keys(dep).length) body.departure = dep;
      return body;
    }
    function summary(body) {
      // Kept as parts and worded when shown, so a report written in one language reads right in the other.
      var village = form.querySelector('#village');
      var name = village.tagName === 'SELECT' ? village.options[village.selectedIndex].text : village.value;
      return { village: name, at: body.observed_at || new Date().toISOString(), types: body.suspected_types };
    }
    function fill(body) {
      form.reset();
      if (form.village_code && body.village_code) form.village_code.value = body.village_code;
      form.observed_at.value = (body.observed_at || '').slice(0, 16);
      $$('input[name=suspected_types]', form).forEach(function (c) { c.checked = (body.suspected_types || []).indexOf(c.value) >= 0; });
      $$('input[name=indicators]', form).forEach(function (c) { c.checked = (body.indicators || []).indexOf(c.value) >= 0; });
      form.narrative.value = body.narrative || '';
      persons.textContent = '';
      (body.persons || []).forEach(function (p, i) {
        var fs = addPerson(p.role || 'witness');
        ['name', 'nik', 'phone', 'age'].forEach(function (k) { if (p[k] != null) fs.querySelector('[name="persons.' + i + '.' + k + '"]').value = p[k]; });
      });
      if (!(body.persons || []).length) addPerson('potential_victim');
      var dep = body.departure || {};
      ['planned_date', 'port', 'destination_country'].forEach(function (k) { form['departure.' + k].value = dep[k] || ''; });
    }

    function clearErrors() {
      $$('[data-error-for]', form).forEach(function (p) { p.hidden = true; p.textContent = ''; });
      $$('[aria-invalid]', form).forEach(function (e) { e.removeAttribute('aria-invalid'); });
      var top = $('[data-form-error]'); top.hidden = true; top.textContent = '';
    }
    function showErrors(fields, message) {
      clearErrors();
      var first = null, loose = [];
      Object.keys(fields || {}).forEach(function (field) {
        var path = field.split('.'), slot = null;
        while (path.length && !slot) { slot = $('[data-error-for="' + path.join('.') + '"]', form); if (!slot) path.pop(); }
        if (!slot) { loose.push(fields[field]); return; }
        slot.textContent = fields[field]; slot.hidden = false;
        var input = $('[data-field="' + path.join('.') + '"]', form);
        if (input) { input.setAttribute('aria-invalid', 'true'); first = first || input; }
        first = first || slot;
      });
      var top = $('[data-form-error]');
      top.textContent = [message || T.fix_fields].concat(loose).join(' ');
      top.hidden = false;
      (first || top).scrollIntoView({ block: 'center' });
      if (first && first.focus) first.focus();
    }
    function say(text, number) {
      var box = $('[data-form-status]');
      box.textContent = '';
      var p = el('p', { 'class': 'notice' }, text);
      if (number) { p.appendChild(document.createTextNode(' ')); p.appendChild(el('strong', { 'data-case-number': '' }, number)); }
      box.appendChild(p);
      box.scrollIntoView({ block: 'start' });
    }

    form.addEventListener('submit', function (e) {
      e.preventDefault();
      clearErrors();
      $$('.person', persons).forEach(function (fs) { if (isEmpty(fs) && $$('.person', persons).length > 0) fs.remove(); });
      renumber();
      var body = collect();
      var button = $('button[type=submit]', form);
      button.disabled = true;
      Outbox.save(body, owner, summary(body), editing).then(function (item) {
        editing = item.id;
        requestSync();
        say(T.sending);
        return send().then(function () { return Outbox.get(item.id); });
      }).then(function (item) {
        button.disabled = false;
        if (item.status === 'refused') { fill(item.body); showErrors(item.fields, item.reason); $('[data-form-status]').textContent = ''; return; }
        editing = null;
        if (location.search) history.replaceState(null, '', '/report');
        resetForm();
        if (item.status === 'sent') say(T.sent_ok, item.case_number);
        else say(item.note === 'signin' ? T.saved_offline + ' ' + T.waiting_signin : T.saved_offline);
        refresh();
      }).catch(function () { button.disabled = false; });
    });

    if (editing) {
      Outbox.get(editing).then(function (item) {
        if (!item || !item.body) { editing = null; resetForm(); return; }
        fill(item.body);
        if (item.status === 'refused') showErrors(item.fields, item.reason);
      });
    } else {
      resetForm();
    }
  }

  refresh().then(function () { if (navigator.onLine) send(); });
  document.addEventListener('visibilitychange', function () { if (!document.hidden && navigator.onLine) send(); });
  document.documentElement.dataset.ready = 'true';
  if (window.performance && performance.mark) performance.mark('waspada-ready');
})();
