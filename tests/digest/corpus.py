"""Real queries for the fingerprint tests, several of each shape with other literals.

Sources: sysbench 1.0's OLTP statements (``/usr/share/sysbench/oltp_common.lua``, with
the literals its text mode sends), MySQL Proxy's example scripts and tutorials, the SQL
that Django, SQLAlchemy, Hibernate and Rails' ActiveRecord write, mysqldump and the
mariadb CLI, and statements an operator types. None contains ``;`` followed by a newline
(pt-fingerprint reads a file as statements separated by that).
"""

from __future__ import annotations

CORPUS: list[bytes] = [
    # -- sysbench oltp_* in text mode (--db-ps-mode=disable) --------------------------
    b"SELECT c FROM sbtest1 WHERE id=5012",
    b"SELECT c FROM sbtest1 WHERE id=17",
    b"SELECT c FROM sbtest3 WHERE id=5012",
    b"SELECT c FROM sbtest1 WHERE id BETWEEN 4963 AND 5062",
    b"SELECT c FROM sbtest1 WHERE id BETWEEN 1 AND 100",
    b"SELECT SUM(k) FROM sbtest2 WHERE id BETWEEN 4963 AND 5062",
    b"SELECT SUM(k) FROM sbtest2 WHERE id BETWEEN 22 AND 121",
    b"SELECT c FROM sbtest4 WHERE id BETWEEN 4963 AND 5062 ORDER BY c",
    b"SELECT DISTINCT c FROM sbtest4 WHERE id BETWEEN 4963 AND 5062 ORDER BY c",
    b"SELECT DISTINCT c FROM sbtest4 WHERE id BETWEEN 99 AND 198 ORDER BY c",
    b"UPDATE sbtest1 SET k=k+1 WHERE id=5032",
    b"UPDATE sbtest1 SET k=k+1 WHERE id=1",
    b"UPDATE sbtest2 SET c='83868641912-28773972837-60736120486-75162659906-27563526494-"
    b"20381887404-41576422241-93426793964-56405065102-33518432330' WHERE id=4981",
    b"UPDATE sbtest2 SET c='1-2' WHERE id=7",
    b"DELETE FROM sbtest1 WHERE id=5022",
    b"DELETE FROM sbtest1 WHERE id=3",
    b"INSERT INTO sbtest1 (id, k, c, pad) VALUES (5022, 4995, '45-67', '99-11')",
    b"INSERT INTO sbtest1 (id, k, c, pad) VALUES (1, 2, 'x', 'y')",
    b"INSERT INTO sbtest1(k, c, pad) VALUES(5006, '68487932199-96439406143', '22195207048-70116052123'),"
    b"(4998, '13241531885-45658403807', '28733802923-10548894641'),"
    b"(5010, '51185622598-89397522786', '00505722282-28103387920')",
    b"INSERT INTO sbtest1(k, c, pad) VALUES(1, 'a', 'b')",
    b"BEGIN",
    b"COMMIT",
    b"begin",
    # -- sysbench's prepared statements (as COM_STMT_PREPARE carries them) -----------
    b"SELECT c FROM sbtest1 WHERE id=?",
    b"SELECT c FROM sbtest1 WHERE id BETWEEN ? AND ?",
    b"UPDATE sbtest1 SET k=k+1 WHERE id=?",
    b"INSERT INTO sbtest1 (id, k, c, pad) VALUES (?, ?, ?, ?)",
    # -- MySQL Proxy's examples and tutorials ---------------------------------------
    b"SELECT * FROM help",
    b"select * from backends",
    b"SELECT @@version_comment LIMIT 1",
    b"SELECT NOW()",
    b"select 1",
    b"SELECT 42",
    b"SHOW VARIABLES LIKE 'version%'",
    b"SHOW VARIABLES LIKE 'max_%'",
    b"SHOW DATABASES",
    b"show tables",
    b"SELECT LAST_INSERT_ID()",
    b"SET autocommit=1",
    b"SET autocommit=0",
    b"SET NAMES utf8mb4",
    b"SET NAMES 'latin1'",
    b"/* a comment first */ SELECT * FROM t1 WHERE a = 1",
    b"SELECT * FROM t1 WHERE a = 2 -- and a trailing one",
    b"SELECT * FROM t1 WHERE a = 3 # a hash comment",
    b"SELECT * FROM t1 /* inline */ WHERE a = 4",
    b"SELECT /*!40001 SQL_NO_CACHE */ a FROM t1",
    b"SELECT /*!40001 SQL_NO_CACHE */ a FROM t1",
    b"USE world",
    b"use `test`",
    # -- Django ---------------------------------------------------------------------
    b"SELECT `auth_user`.`id`, `auth_user`.`password`, `auth_user`.`last_login`, "
    b"`auth_user`.`is_superuser`, `auth_user`.`username` FROM `auth_user` "
    b"WHERE `auth_user`.`username` = 'alice' LIMIT 21",
    b"SELECT `auth_user`.`id`, `auth_user`.`password`, `auth_user`.`last_login`, "
    b"`auth_user`.`is_superuser`, `auth_user`.`username` FROM `auth_user` "
    b"WHERE `auth_user`.`username` = 'bob' LIMIT 21",
    b"SELECT `polls_question`.`id`, `polls_question`.`question_text` FROM `polls_question` "
    b"WHERE `polls_question`.`id` IN (1, 2, 3, 4) ORDER BY `polls_question`.`pub_date` DESC",
    b"SELECT `polls_question`.`id`, `polls_question`.`question_text` FROM `polls_question` "
    b"WHERE `polls_question`.`id` IN (7) ORDER BY `polls_question`.`pub_date` DESC",
    b"INSERT INTO `django_session` (`session_key`, `session_data`, `expire_date`) "
    b"VALUES ('k1x9', 'eyJfYXV0aF91c2VyX2lkIjoiMSJ9', '2026-12-18 10:00:00.000000')",
    b"INSERT INTO `django_session` (`session_key`, `session_data`, `expire_date`) "
    b"VALUES ('zz01', 'e30', '2027-01-01 00:00:00.000000')",
    b"UPDATE `auth_user` SET `last_login` = '2026-12-04 10:27:30.123456' WHERE `auth_user`.`id` = 1",
    b"UPDATE `auth_user` SET `last_login` = '2026-12-05 08:00:00.000001' WHERE `auth_user`.`id` = 42",
    # -- SQLAlchemy -----------------------------------------------------------------
    b"SELECT users.id AS users_id, users.name AS users_name, users.fullname AS users_fullname \n"
    b"FROM users \nWHERE users.name = 'ed' \n LIMIT 1",
    b"SELECT users.id AS users_id, users.name AS users_name, users.fullname AS users_fullname \n"
    b"FROM users \nWHERE users.name = 'wendy' \n LIMIT 1",
    b"SELECT addresses.id AS addresses_id, addresses.email_address AS addresses_email_address \n"
    b"FROM addresses \nWHERE addresses.user_id IN (5, 6, 7) ORDER BY addresses.id",
    b"INSERT INTO users (name, fullname) VALUES ('ed', 'Ed Jones'), ('wendy', 'Wendy Williams'), "
    b"('mary', 'Mary Contrary')",
    b"INSERT INTO users (name, fullname) VALUES ('fred', 'Fred Flintstone')",
    b"SELECT count(*) AS count_1 \nFROM (SELECT users.id AS users_id \nFROM users \n"
    b"WHERE users.name LIKE 'e%') AS anon_1",
    # -- Hibernate ------------------------------------------------------------------
    b"select customer0_.id as id1_0_, customer0_.email as email2_0_ from customer customer0_ "
    b"where customer0_.email=? limit ?",
    b"select customer0_.id as id1_0_, customer0_.email as email2_0_ from customer customer0_ "
    b"where customer0_.email='a@b.c' limit 10",
    b"select customer0_.id as id1_0_, customer0_.email as email2_0_ from customer customer0_ "
    b"where customer0_.email='x@y.z' limit 20",
    b"insert into orders (customer_id, total, created) values (12, 99.95, '2026-12-04')",
    b"insert into orders (customer_id, total, created) values (13, 5.5, '2026-12-05')",
    # -- Rails ActiveRecord ----------------------------------------------------------
    b"SELECT `articles`.* FROM `articles` WHERE `articles`.`id` = 1 LIMIT 1",
    b"SELECT `articles`.* FROM `articles` WHERE `articles`.`id` = 77 LIMIT 1",
    b"SELECT `articles`.* FROM `articles` ORDER BY `articles`.`created_at` ASC LIMIT 10 OFFSET 20",
    b"SELECT `articles`.* FROM `articles` ORDER BY `articles`.`created_at` LIMIT 10 OFFSET 40",
    b"SELECT COUNT(*) FROM `comments` WHERE `comments`.`article_id` = 3",
    b"UPDATE `articles` SET `title` = 'Hello', `updated_at` = '2026-12-04 10:00:00' WHERE `articles`.`id` = 1",
    b"DELETE FROM `comments` WHERE `comments`.`id` IN (3, 4)",
    # -- strings, numbers, NULL, IN lists, joins, unions -----------------------------
    b"SELECT * FROM t WHERE name = 'O\\'Brien'",
    b"SELECT * FROM t WHERE name = 'Smith'",
    b'SELECT * FROM t WHERE name = "double quoted"',
    b"SELECT * FROM t WHERE a IS NULL",
    b"SELECT * FROM t WHERE a IS NOT NULL AND b = -12.5",
    b"SELECT * FROM t WHERE a IS NOT NULL AND b = 3",
    b"SELECT * FROM t WHERE price > 1.5e3",
    b"SELECT * FROM t WHERE price > 7",
    b"SELECT a.x, b.y FROM a JOIN b ON a.id = b.a_id WHERE a.z IN ('p', 'q')",
    b"SELECT a.x, b.y FROM a JOIN b ON a.id = b.a_id WHERE a.z IN ('r')",
    b"SELECT a.x, b.y FROM a LEFT OUTER JOIN b ON a.id = b.a_id WHERE a.z = 5",
    b"select id from t1 where k = 3 union select id from t1 where k = 4",
    b"select id from t1 where k = 9 union select id from t1 where k = 10 union select id from t1 where k = 11",
    b"SELECT id FROM t WHERE created > NOW() - INTERVAL 1 DAY",
    b"SELECT id FROM t WHERE created > NOW() - INTERVAL 7 DAY",
    b"SELECT * FROM t WHERE id IN (SELECT t_id FROM u WHERE v = 1)",
    b"SELECT * FROM t WHERE id IN (SELECT t_id FROM u WHERE v = 2)",
    b"SELECT * FROM t LIMIT 5, 10",
    b"SELECT * FROM t LIMIT 15, 10",
    b"SELECT * FROM t LIMIT 10",
    b"  SELECT\n\t*\n  FROM   t\n  WHERE  id = 1  ",
    b"SELECT * FROM t WHERE id = 2",
    b"REPLACE INTO kv (k, v) VALUES ('a', '1'), ('b', '2')",
    b"REPLACE INTO kv (k, v) VALUES ('c', '3')",
    b"INSERT IGNORE INTO kv (k, v) VALUES ('a', '1')",
    b"INSERT INTO kv (k, v) VALUES ('a', '1') ON DUPLICATE KEY UPDATE v = VALUES(v)",
    b"INSERT INTO kv (k, v) VALUES ('z', '26') ON DUPLICATE KEY UPDATE v = VALUES(v)",
    b"INSERT INTO log (at, what) VALUES (NOW(), 'start'), (NOW(), 'stop')",
    b"INSERT INTO log (at, what) VALUES (NOW(), 'again')",
    b"CALL refresh_stats(3, 'daily')",
    b"CALL refresh_stats(4, 'weekly')",
    b"CREATE TABLE t2 (id INT PRIMARY KEY, v VARCHAR(32))",
    b"DROP TABLE IF EXISTS t2",
    b"SELECT SLEEP(0.5)",
    b"SELECT SLEEP(2)",
    b"SELECT `select`, `from` FROM `weird table` WHERE `where` = 1",
    b"SELECT `select`, `from` FROM `weird table` WHERE `where` = 2",
]
