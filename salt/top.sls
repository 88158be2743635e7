base:
  '*mail*':
    - mail
