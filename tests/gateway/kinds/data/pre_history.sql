BEGIN TRANSACTION;
CREATE TABLE acks (
        device TEXT NOT NULL,
        epoch  TEXT NOT NULL,
        upto   INTEGER NOT NULL, verified INTEGER, mark INTEGER, sealed INTEGER, fork TEXT,               -- every seq <= upto of this epoch is settled
        PRIMARY KEY (device, epoch)
    );
CREATE TABLE alerts (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        key         TEXT NOT NULL,             -- one open (or acked) alert per key
        severity    TEXT NOT NULL,             -- info | warning | critical
        device      TEXT,
        type        TEXT NOT NULL,
        text        TEXT NOT NULL,
        data        TEXT NOT NULL,             -- JSON: the item's fields
        state       TEXT NOT NULL,             -- open | acked | resolved
        count       INTEGER NOT NULL,
        created     INTEGER NOT NULL,
        last        INTEGER NOT NULL,
        acked_by    TEXT,
        acked_at    INTEGER,
        resolved_at INTEGER,
        source      INTEGER NOT NULL           -- stream.id of the item that raised it
    );
CREATE TABLE alerts_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO "alerts_meta" VALUES('cursor',0);
CREATE TABLE an_device (
        device TEXT PRIMARY KEY, kind TEXT NOT NULL,
        since  INTEGER,                          -- start of the open span (unix ms)
        online INTEGER NOT NULL DEFAULT 0,
        alerts TEXT NOT NULL DEFAULT '[]');
CREATE TABLE an_device_time (
        period TEXT NOT NULL, t INTEGER NOT NULL, device TEXT NOT NULL,
        online_ms INTEGER NOT NULL DEFAULT 0, oos_ms INTEGER NOT NULL DEFAULT 0,
        available_ms INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (period, t, device)) WITHOUT ROWID;
CREATE TABLE an_hour (
        hour INTEGER PRIMARY KEY,               -- unix ms of the UTC hour
        entries INTEGER NOT NULL DEFAULT 0, placements INTEGER NOT NULL DEFAULT 0,
        pad_lifts INTEGER NOT NULL DEFAULT 0, pad_dwell_ms INTEGER NOT NULL DEFAULT 0,
        sessions INTEGER NOT NULL DEFAULT 0, try_ons INTEGER NOT NULL DEFAULT 0,
        purchases INTEGER NOT NULL DEFAULT 0, units INTEGER NOT NULL DEFAULT 0,
        lk_loaded INTEGER NOT NULL DEFAULT 0, lk_collected INTEGER NOT NULL DEFAULT 0,
        lk_ontime INTEGER NOT NULL DEFAULT 0, lk_expired INTEGER NOT NULL DEFAULT 0,
        lk_dwell_ms INTEGER NOT NULL DEFAULT 0, tube_delivered INTEGER NOT NULL DEFAULT 0);
CREATE TABLE an_locker (ord TEXT PRIMARY KEY, loaded INTEGER NOT NULL, collected INTEGER,
                            dwell_ms INTEGER, expired INTEGER);
CREATE TABLE an_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO "an_meta" VALUES('cursor',0);
CREATE TABLE an_pad (device TEXT PRIMARY KEY, product TEXT NOT NULL);
CREATE TABLE an_product (
        period TEXT NOT NULL, t INTEGER NOT NULL, product TEXT NOT NULL,
        placed INTEGER NOT NULL DEFAULT 0, pad_dwell_ms INTEGER NOT NULL DEFAULT 0,
        tried INTEGER NOT NULL DEFAULT 0, bought INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (period, t, product)) WITHOUT ROWID;
CREATE TABLE an_tube (job TEXT PRIMARY KEY, requested INTEGER NOT NULL, delivered INTEGER,
                          ms INTEGER);
CREATE TABLE api_tokens (
        id      TEXT PRIMARY KEY,
        name    TEXT NOT NULL,
        scopes  TEXT NOT NULL,          -- space separated
        hash    TEXT NOT NULL,          -- sha256 hex of the secret part
        created INTEGER NOT NULL,
        revoked INTEGER
    );
CREATE TABLE audit (
        id      INTEGER PRIMARY KEY,
        t       INTEGER NOT NULL,       -- unix ms
        who     TEXT NOT NULL,
        token   TEXT,
        ip      TEXT,
        method  TEXT NOT NULL,
        path    TEXT NOT NULL,
        status  INTEGER NOT NULL,
        outcome TEXT
    );
CREATE TABLE chain_outbox (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,   -- the chain message's `seq`
        stream_id INTEGER NOT NULL,
        topic     TEXT NOT NULL,
        type      TEXT NOT NULL,
        data      TEXT NOT NULL,
        created   INTEGER NOT NULL
    );
CREATE TABLE command_counts (
        status TEXT PRIMARY KEY,
        n      INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO "command_counts" VALUES('queued',19);
CREATE TABLE commands (
        id        TEXT PRIMARY KEY,
        device    TEXT NOT NULL,
        name      TEXT NOT NULL,
        args      TEXT NOT NULL,               -- JSON object
        idem_key  TEXT NOT NULL,
        status    TEXT NOT NULL CHECK (status IN
                  ('queued','sent','accepted','done','rejected','failed','expired')),
        reason    TEXT,
        result    TEXT,                        -- JSON object or NULL
        deadline  INTEGER NOT NULL,
        created   INTEGER NOT NULL,
        updated   INTEGER NOT NULL,
        late      INTEGER NOT NULL DEFAULT 0,
        sends     INTEGER NOT NULL DEFAULT 0,
        last_sent INTEGER, late_outcome TEXT,
        UNIQUE (device, idem_key)
    );
INSERT INTO "commands" VALUES('c-cc6809a26b1e5485','room-2','call_ack','{}','fr:r-4:call_ack','queued',NULL,NULL,1800035520000,1800034920000,1800034920000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-7c66d2c65e60b8a9','room-2','call_ack','{}','fr:r-10:call_ack','queued',NULL,NULL,1800045180000,1800044580000,1800044580000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-7837ba60862a9518','room-2','call_ack','{}','fr:r-14:call_ack','queued',NULL,NULL,1800121920000,1800121320000,1800121320000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-c8c043254b74259b','room-2','call_ack','{}','fr:r-20:call_ack','queued',NULL,NULL,1800131580000,1800130980000,1800130980000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-3602b516bb10ca84','room-2','call_ack','{}','fr:r-24:call_ack','queued',NULL,NULL,1800208320000,1800207720000,1800207720000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-a103445067595505','room-2','call_ack','{}','fr:r-30:call_ack','queued',NULL,NULL,1800217980000,1800217380000,1800217380000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-afd15dbde635d9a6','lk-u1','set_order','{"compartment":1,"order":"o-1","mac":"20a4d1ee2a70d720e0076d261d8f1776dea9b984cdc3922e80d3e4f3d3a8e7e2","exp":1800288060000,"salt_id":"02b990bd","key_id":"70c69129"}','lk:o-1:set_order:20a4d1ee2a70d720','queued',NULL,NULL,1800115260000,1800028860000,1800028860000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-65dc06d6ebc2fc10','lk-u1','set_order','{"compartment":5,"order":"o-2","mac":"a24ebeac40f36fb5f4ee6418066e16506e4c68dda4f7c0450e173c8543a7e912","exp":1800289920000,"salt_id":"02b990bd","key_id":"70c69129"}','lk:o-2:set_order:a24ebeac40f36fb5','queued',NULL,NULL,1800117120000,1800030720000,1800030720000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-4ac09ab21e582cd9','lk-u1','set_order','{"compartment":9,"order":"o-3","mac":"f2ac61996f8530d8fa177a9e31f7ddc93cda6c3ef202393c232a6abba16e7eef","exp":1800291780000,"salt_id":"02b990bd","key_id":"70c69129"}','lk:o-3:set_order:f2ac61996f8530d8','queued',NULL,NULL,1800118980000,1800032580000,1800032580000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-5a0ed1d79954d286','lk-u1','set_order','{"compartment":1,"order":"o-4","mac":"692458a65f50b1366452e56d412bd8a641713e4b958f856539b06a47df2e8289","exp":1800374460000,"salt_id":"02b990bd","key_id":"70c69129"}','lk:o-4:set_order:692458a65f50b136','queued',NULL,NULL,1800201660000,1800115260000,1800115260000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-003b7471136c98b9','lk-u1','set_order','{"compartment":1,"order":"o-4","mac":"bed186c7edf9a909b0d92b34168b4d1cb9a07fa321a113b0ada036392f266a72","exp":1800374460000,"salt_id":"02b990bd","key_id":"70c69129"}','lk:o-4:set_order:bed186c7edf9a909','queued',NULL,NULL,1800201660000,1800115260000,1800115260000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-55db2ba47b162571','lk-u1','set_order','{"compartment":10,"order":"o-6","mac":"dfac452eefe31060ddaa493c6fb25dd1d2c97d2a7e1a66e8a711b06135e609a5","exp":1800376320000,"salt_id":"02b990bd","key_id":"70c69129"}','lk:o-6:set_order:dfac452eefe31060','queued',NULL,NULL,1800203520000,1800117120000,1800117120000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-2e81b1b72cc72416','lk-u1','set_order','{"compartment":5,"order":"o-8","mac":"5732645750683c409d6e67a3620cb3bd5ac8d23fb10718daaa84343e1017041a","exp":1800460860000,"salt_id":"02b990bd","key_id":"70c69129"}','lk:o-8:set_order:5732645750683c40','queued',NULL,NULL,1800288060000,1800201660000,1800201660000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-9b2b9ce9f0b1c4e7','lk-u1','set_order','{"compartment":5,"order":"o-8","mac":"867f6840b79946d0a9727dd9de7c34a4b5307a094ea13bb4a2c66022f62b0983","exp":1800460860000,"salt_id":"02b990bd","key_id":"70c69129"}','lk:o-8:set_order:867f6840b79946d0','queued',NULL,NULL,1800288060000,1800201660000,1800201660000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-a7111e291a7b7d79','lk-u1','set_order','{"compartment":11,"order":"o-9","mac":"e29e86b1d3a21c3041f0e8034ddce06563b93e9cbef72f835480ac7ac610c4c6","exp":1800462720000,"salt_id":"02b990bd","key_id":"70c69129"}','lk:o-9:set_order:e29e86b1d3a21c30','queued',NULL,NULL,1800289920000,1800203520000,1800203520000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-34b00a7fde427a36','lk-u1','set_order','{"compartment":5,"order":"o-11","mac":"795c690b97c91914fd7b0f615407d8f7128897bcfb6685c648ad654c0c908673","exp":1800547260000,"salt_id":"02b990bd","key_id":"70c69129"}','lk:o-11:set_order:795c690b97c91914','queued',NULL,NULL,1800374460000,1800288060000,1800288060000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-e94fcb62b2486bc4','lk-u1','set_order','{"compartment":12,"order":"o-12","mac":"17225ba0385ae2d917ebada31d0a835aa4652ddfb1e71aefccfdeb8ee3814ce5","exp":1800549120000,"salt_id":"02b990bd","key_id":"70c69129"}','lk:o-12:set_order:17225ba0385ae2d9','queued',NULL,NULL,1800376320000,1800289920000,1800289920000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-9b2e2e1c316cca40','lk-u1','set_order','{"compartment":12,"order":"o-12","mac":"977d9d61ec9d39448273504eb54fa2f45df735f7ecb4e59edd6a42bbb5913911","exp":1800549120000,"salt_id":"02b990bd","key_id":"70c69129"}','lk:o-12:set_order:977d9d61ec9d3944','queued',NULL,NULL,1800376320000,1800289920000,1800289920000,0,0,NULL,NULL);
INSERT INTO "commands" VALUES('c-d5ae253dd92cda5d','lk-u1','revoke','{"compartment":9,"order":"o-3"}','lk:o-3:revoke','queued',NULL,NULL,1800381600000,1800295200000,1800295200000,0,0,NULL,NULL);
CREATE TABLE counters (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
CREATE TABLE devices (
        id         TEXT PRIMARY KEY,
        kind       TEXT NOT NULL,
        fw         TEXT NOT NULL,
        caps       TEXT NOT NULL,              -- JSON list
        cfg        TEXT NOT NULL,
        session    INTEGER NOT NULL,
        epoch      TEXT NOT NULL,
        boot       INTEGER NOT NULL,
        reset      TEXT,
        online     INTEGER NOT NULL DEFAULT 0,
        last_seen  INTEGER NOT NULL,
        first_seen INTEGER NOT NULL
    );
INSERT INTO "devices" VALUES('room-1','fitting-room','t','[]','x',1,'e1',1,NULL,1,1800000000000,1800000000000);
INSERT INTO "devices" VALUES('room-2','fitting-room','t','[]','x',1,'e1',1,NULL,1,1800000000000,1800000000000);
INSERT INTO "devices" VALUES('lk-u1','locker-bank','t','[]','x',1,'e1',1,NULL,1,1800000000000,1800000000000);
CREATE TABLE entries (
        source TEXT NOT NULL,                   -- footfall-api, or a door counter's id
        minute INTEGER NOT NULL,                -- unix ms of the minute
        n      INTEGER NOT NULL,
        PRIMARY KEY (source, minute)) WITHOUT ROWID;
CREATE TABLE events (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        device    TEXT NOT NULL,
        epoch     TEXT NOT NULL,
        seq       INTEGER,                     -- NULL: made by the gateway (journal.overflow)
        type      TEXT NOT NULL,
        t_device  INTEGER,
        t_gateway INTEGER NOT NULL,
        body      TEXT NOT NULL,               -- JSON object
        UNIQUE (device, epoch, seq)
    );
INSERT INTO "events" VALUES(1,'room-1','e1',1,'room.occupied',1800032400000,1800032400000,'{}');
INSERT INTO "events" VALUES(2,'room-1','e1',2,'garment.in',1800032460000,1800032460000,'{"uid":"04000","tech":"ntag213","gtin":"09506000134352","serial":"SN000"}');
INSERT INTO "events" VALUES(3,'room-1','e1',3,'garment.out',1800032520000,1800032520000,'{"uid":"04000"}');
INSERT INTO "events" VALUES(4,'room-1','e1',4,'garment.in',1800032520000,1800032520000,'{"uid":"04000","tech":"ntag213","gtin":"09506000134352","serial":"SN000"}');
INSERT INTO "events" VALUES(5,'room-1','e1',5,'garment.out',1800033120000,1800033120000,'{"uid":"04000"}');
INSERT INTO "events" VALUES(6,'room-1','e1',6,'room.free',1800033120000,1800033120000,'{}');
INSERT INTO "events" VALUES(7,'room-2','e1',1,'room.occupied',1800034800000,1800034800000,'{}');
INSERT INTO "events" VALUES(8,'room-2','e1',2,'garment.in',1800034860000,1800034860000,'{"uid":"04010","tech":"ntag213","gtin":"09506000134369","serial":"SN010"}');
INSERT INTO "events" VALUES(9,'room-2','e1',3,'garment.in',1800034920000,1800034920000,'{"uid":"04011","tech":"ntag213","gtin":"09506000134376","serial":"SN011"}');
INSERT INTO "events" VALUES(10,'room-2','e1',4,'call.pressed',1800034920000,1800034920000,'{}');
INSERT INTO "events" VALUES(11,'room-2','e1',5,'garment.out',1800035520000,1800035520000,'{"uid":"04010"}');
INSERT INTO "events" VALUES(12,'room-2','e1',6,'garment.out',1800035520000,1800035520000,'{"uid":"04011"}');
INSERT INTO "events" VALUES(13,'room-2','e1',7,'room.free',1800035520000,1800035520000,'{}');
INSERT INTO "events" VALUES(14,'room-1','e1',7,'room.occupied',1800037200000,1800037200000,'{}');
INSERT INTO "events" VALUES(15,'room-1','e1',8,'garment.in',1800037260000,1800037260000,'{"uid":"04020","tech":"ntag213","gtin":"09506000134376","serial":"SN020"}');
INSERT INTO "events" VALUES(16,'room-1','e1',9,'garment.in',1800037320000,1800037320000,'{"uid":"04021","tech":"ntag213","gtin":"09506000134383","serial":"SN021"}');
INSERT INTO "events" VALUES(17,'room-1','e1',10,'garment.in',1800037380000,1800037380000,'{"uid":"04022","tech":"ntag213","gtin":"09506000134352","serial":"SN022"}');
INSERT INTO "events" VALUES(18,'room-1','e1',11,'garment.out',1800037980000,1800037980000,'{"uid":"04020"}');
INSERT INTO "events" VALUES(19,'room-1','e1',12,'garment.out',1800037980000,1800037980000,'{"uid":"04021"}');
INSERT INTO "events" VALUES(20,'room-1','e1',13,'garment.out',1800037980000,1800037980000,'{"uid":"04022"}');
INSERT INTO "events" VALUES(21,'room-1','e1',14,'room.free',1800037980000,1800037980000,'{}');
INSERT INTO "events" VALUES(22,'room-2','e1',8,'room.occupied',1800039600000,1800039600000,'{}');
INSERT INTO "events" VALUES(23,'room-2','e1',9,'garment.in',1800039660000,1800039660000,'{"uid":"04030","tech":"ntag213","gtin":"09506000134383","serial":"SN030"}');
INSERT INTO "events" VALUES(24,'room-2','e1',10,'garment.out',1800039720000,1800039720000,'{"uid":"04030"}');
INSERT INTO "events" VALUES(25,'room-2','e1',11,'garment.in',1800039720000,1800039720000,'{"uid":"04030","tech":"ntag213","gtin":"09506000134383","serial":"SN030"}');
INSERT INTO "events" VALUES(26,'room-2','e1',12,'garment.out',1800040320000,1800040320000,'{"uid":"04030"}');
INSERT INTO "events" VALUES(27,'room-2','e1',13,'room.free',1800040320000,1800040320000,'{}');
INSERT INTO "events" VALUES(28,'room-1','e1',15,'room.occupied',1800042000000,1800042000000,'{}');
INSERT INTO "events" VALUES(29,'room-1','e1',16,'garment.in',1800042060000,1800042060000,'{"uid":"04040","tech":"ntag213","gtin":"09506000134352","serial":"SN040"}');
INSERT INTO "events" VALUES(30,'room-1','e1',17,'garment.in',1800042120000,1800042120000,'{"uid":"04041","tech":"ntag213","gtin":"09506000134369","serial":"SN041"}');
INSERT INTO "events" VALUES(31,'room-1','e1',18,'garment.out',1800042720000,1800042720000,'{"uid":"04040"}');
INSERT INTO "events" VALUES(32,'room-1','e1',19,'garment.out',1800042720000,1800042720000,'{"uid":"04041"}');
INSERT INTO "events" VALUES(33,'room-1','e1',20,'room.free',1800042720000,1800042720000,'{}');
INSERT INTO "events" VALUES(34,'room-2','e1',14,'room.occupied',1800044400000,1800044400000,'{}');
INSERT INTO "events" VALUES(35,'room-2','e1',15,'garment.in',1800044460000,1800044460000,'{"uid":"04050","tech":"ntag213","gtin":"09506000134369","serial":"SN050"}');
INSERT INTO "events" VALUES(36,'room-2','e1',16,'garment.in',1800044520000,1800044520000,'{"uid":"04051","tech":"ntag213","gtin":"09506000134376","serial":"SN051"}');
INSERT INTO "events" VALUES(37,'room-2','e1',17,'garment.in',1800044580000,1800044580000,'{"uid":"04052","tech":"ntag213","gtin":"09506000134383","serial":"SN052"}');
INSERT INTO "events" VALUES(38,'room-2','e1',18,'call.pressed',1800044580000,1800044580000,'{}');
INSERT INTO "events" VALUES(39,'room-2','e1',19,'garment.out',1800045180000,1800045180000,'{"uid":"04050"}');
INSERT INTO "events" VALUES(40,'room-2','e1',20,'garment.out',1800045180000,1800045180000,'{"uid":"04051"}');
INSERT INTO "events" VALUES(41,'room-2','e1',21,'garment.out',1800045180000,1800045180000,'{"uid":"04052"}');
INSERT INTO "events" VALUES(42,'room-2','e1',22,'room.free',1800045180000,1800045180000,'{}');
INSERT INTO "events" VALUES(43,'room-1','e1',21,'room.occupied',1800118800000,1800118800000,'{}');
INSERT INTO "events" VALUES(44,'room-1','e1',22,'garment.in',1800118860000,1800118860000,'{"uid":"04100","tech":"ntag213","gtin":"09506000134369","serial":"SN100"}');
INSERT INTO "events" VALUES(45,'room-1','e1',23,'garment.out',1800118920000,1800118920000,'{"uid":"04100"}');
INSERT INTO "events" VALUES(46,'room-1','e1',24,'garment.in',1800118920000,1800118920000,'{"uid":"04100","tech":"ntag213","gtin":"09506000134369","serial":"SN100"}');
INSERT INTO "events" VALUES(47,'room-1','e1',25,'garment.out',1800119520000,1800119520000,'{"uid":"04100"}');
INSERT INTO "events" VALUES(48,'room-1','e1',26,'room.free',1800119520000,1800119520000,'{}');
INSERT INTO "events" VALUES(49,'room-2','e1',23,'room.occupied',1800121200000,1800121200000,'{}');
INSERT INTO "events" VALUES(50,'room-2','e1',24,'garment.in',1800121260000,1800121260000,'{"uid":"04110","tech":"ntag213","gtin":"09506000134376","serial":"SN110"}');
INSERT INTO "events" VALUES(51,'room-2','e1',25,'garment.in',1800121320000,1800121320000,'{"uid":"04111","tech":"ntag213","gtin":"09506000134383","serial":"SN111"}');
INSERT INTO "events" VALUES(52,'room-2','e1',26,'call.pressed',1800121320000,1800121320000,'{}');
INSERT INTO "events" VALUES(53,'room-2','e1',27,'garment.out',1800121920000,1800121920000,'{"uid":"04110"}');
INSERT INTO "events" VALUES(54,'room-2','e1',28,'garment.out',1800121920000,1800121920000,'{"uid":"04111"}');
INSERT INTO "events" VALUES(55,'room-2','e1',29,'room.free',1800121920000,1800121920000,'{}');
INSERT INTO "events" VALUES(56,'room-1','e1',27,'room.occupied',1800123600000,1800123600000,'{}');
INSERT INTO "events" VALUES(57,'room-1','e1',28,'garment.in',1800123660000,1800123660000,'{"uid":"04120","tech":"ntag213","gtin":"09506000134383","serial":"SN120"}');
INSERT INTO "events" VALUES(58,'room-1','e1',29,'garment.in',1800123720000,1800123720000,'{"uid":"04121","tech":"ntag213","gtin":"09506000134352","serial":"SN121"}');
INSERT INTO "events" VALUES(59,'room-1','e1',30,'garment.in',1800123780000,1800123780000,'{"uid":"04122","tech":"ntag213","gtin":"09506000134369","serial":"SN122"}');
INSERT INTO "events" VALUES(60,'room-1','e1',31,'garment.out',1800124380000,1800124380000,'{"uid":"04120"}');
INSERT INTO "events" VALUES(61,'room-1','e1',32,'garment.out',1800124380000,1800124380000,'{"uid":"04121"}');
INSERT INTO "events" VALUES(62,'room-1','e1',33,'garment.out',1800124380000,1800124380000,'{"uid":"04122"}');
INSERT INTO "events" VALUES(63,'room-1','e1',34,'room.free',1800124380000,1800124380000,'{}');
INSERT INTO "events" VALUES(64,'room-2','e1',30,'room.occupied',1800126000000,1800126000000,'{}');
INSERT INTO "events" VALUES(65,'room-2','e1',31,'garment.in',1800126060000,1800126060000,'{"uid":"04130","tech":"ntag213","gtin":"09506000134352","serial":"SN130"}');
INSERT INTO "events" VALUES(66,'room-2','e1',32,'garment.out',1800126120000,1800126120000,'{"uid":"04130"}');
INSERT INTO "events" VALUES(67,'room-2','e1',33,'garment.in',1800126120000,1800126120000,'{"uid":"04130","tech":"ntag213","gtin":"09506000134352","serial":"SN130"}');
INSERT INTO "events" VALUES(68,'room-2','e1',34,'garment.out',1800126720000,1800126720000,'{"uid":"04130"}');
INSERT INTO "events" VALUES(69,'room-2','e1',35,'room.free',1800126720000,1800126720000,'{}');
INSERT INTO "events" VALUES(70,'room-1','e1',35,'room.occupied',1800128400000,1800128400000,'{}');
INSERT INTO "events" VALUES(71,'room-1','e1',36,'garment.in',1800128460000,1800128460000,'{"uid":"04140","tech":"ntag213","gtin":"09506000134369","serial":"SN140"}');
INSERT INTO "events" VALUES(72,'room-1','e1',37,'garment.in',1800128520000,1800128520000,'{"uid":"04141","tech":"ntag213","gtin":"09506000134376","serial":"SN141"}');
INSERT INTO "events" VALUES(73,'room-1','e1',38,'garment.out',1800129120000,1800129120000,'{"uid":"04140"}');
INSERT INTO "events" VALUES(74,'room-1','e1',39,'garment.out',1800129120000,1800129120000,'{"uid":"04141"}');
INSERT INTO "events" VALUES(75,'room-1','e1',40,'room.free',1800129120000,1800129120000,'{}');
INSERT INTO "events" VALUES(76,'room-2','e1',36,'room.occupied',1800130800000,1800130800000,'{}');
INSERT INTO "events" VALUES(77,'room-2','e1',37,'garment.in',1800130860000,1800130860000,'{"uid":"04150","tech":"ntag213","gtin":"09506000134376","serial":"SN150"}');
INSERT INTO "events" VALUES(78,'room-2','e1',38,'garment.in',1800130920000,1800130920000,'{"uid":"04151","tech":"ntag213","gtin":"09506000134383","serial":"SN151"}');
INSERT INTO "events" VALUES(79,'room-2','e1',39,'garment.in',1800130980000,1800130980000,'{"uid":"04152","tech":"ntag213","gtin":"09506000134352","serial":"SN152"}');
INSERT INTO "events" VALUES(80,'room-2','e1',40,'call.pressed',1800130980000,1800130980000,'{}');
INSERT INTO "events" VALUES(81,'room-2','e1',41,'garment.out',1800131580000,1800131580000,'{"uid":"04150"}');
INSERT INTO "events" VALUES(82,'room-2','e1',42,'garment.out',1800131580000,1800131580000,'{"uid":"04151"}');
INSERT INTO "events" VALUES(83,'room-2','e1',43,'garment.out',1800131580000,1800131580000,'{"uid":"04152"}');
INSERT INTO "events" VALUES(84,'room-2','e1',44,'room.free',1800131580000,1800131580000,'{}');
INSERT INTO "events" VALUES(85,'room-1','e1',41,'room.occupied',1800205200000,1800205200000,'{}');
INSERT INTO "events" VALUES(86,'room-1','e1',42,'garment.in',1800205260000,1800205260000,'{"uid":"04200","tech":"ntag213","gtin":"09506000134376","serial":"SN200"}');
INSERT INTO "events" VALUES(87,'room-1','e1',43,'garment.out',1800205320000,1800205320000,'{"uid":"04200"}');
INSERT INTO "events" VALUES(88,'room-1','e1',44,'garment.in',1800205320000,1800205320000,'{"uid":"04200","tech":"ntag213","gtin":"09506000134376","serial":"SN200"}');
INSERT INTO "events" VALUES(89,'room-1','e1',45,'garment.out',1800205920000,1800205920000,'{"uid":"04200"}');
INSERT INTO "events" VALUES(90,'room-1','e1',46,'room.free',1800205920000,1800205920000,'{}');
INSERT INTO "events" VALUES(91,'room-2','e1',45,'room.occupied',1800207600000,1800207600000,'{}');
INSERT INTO "events" VALUES(92,'room-2','e1',46,'garment.in',1800207660000,1800207660000,'{"uid":"04210","tech":"ntag213","gtin":"09506000134383","serial":"SN210"}');
INSERT INTO "events" VALUES(93,'room-2','e1',47,'garment.in',1800207720000,1800207720000,'{"uid":"04211","tech":"ntag213","gtin":"09506000134352","serial":"SN211"}');
INSERT INTO "events" VALUES(94,'room-2','e1',48,'call.pressed',1800207720000,1800207720000,'{}');
INSERT INTO "events" VALUES(95,'room-2','e1',49,'garment.out',1800208320000,1800208320000,'{"uid":"04210"}');
INSERT INTO "events" VALUES(96,'room-2','e1',50,'garment.out',1800208320000,1800208320000,'{"uid":"04211"}');
INSERT INTO "events" VALUES(97,'room-2','e1',51,'room.free',1800208320000,1800208320000,'{}');
INSERT INTO "events" VALUES(98,'room-1','e1',47,'room.occupied',1800210000000,1800210000000,'{}');
INSERT INTO "events" VALUES(99,'room-1','e1',48,'garment.in',1800210060000,1800210060000,'{"uid":"04220","tech":"ntag213","gtin":"09506000134352","serial":"SN220"}');
INSERT INTO "events" VALUES(100,'room-1','e1',49,'garment.in',1800210120000,1800210120000,'{"uid":"04221","tech":"ntag213","gtin":"09506000134369","serial":"SN221"}');
INSERT INTO "events" VALUES(101,'room-1','e1',50,'garment.in',1800210180000,1800210180000,'{"uid":"04222","tech":"ntag213","gtin":"09506000134376","serial":"SN222"}');
INSERT INTO "events" VALUES(102,'room-1','e1',51,'garment.out',1800210780000,1800210780000,'{"uid":"04220"}');
INSERT INTO "events" VALUES(103,'room-1','e1',52,'garment.out',1800210780000,1800210780000,'{"uid":"04221"}');
INSERT INTO "events" VALUES(104,'room-1','e1',53,'garment.out',1800210780000,1800210780000,'{"uid":"04222"}');
INSERT INTO "events" VALUES(105,'room-1','e1',54,'room.free',1800210780000,1800210780000,'{}');
INSERT INTO "events" VALUES(106,'room-2','e1',52,'room.occupied',1800212400000,1800212400000,'{}');
INSERT INTO "events" VALUES(107,'room-2','e1',53,'garment.in',1800212460000,1800212460000,'{"uid":"04230","tech":"ntag213","gtin":"09506000134369","serial":"SN230"}');
INSERT INTO "events" VALUES(108,'room-2','e1',54,'garment.out',1800212520000,1800212520000,'{"uid":"04230"}');
INSERT INTO "events" VALUES(109,'room-2','e1',55,'garment.in',1800212520000,1800212520000,'{"uid":"04230","tech":"ntag213","gtin":"09506000134369","serial":"SN230"}');
INSERT INTO "events" VALUES(110,'room-2','e1',56,'garment.out',1800213120000,1800213120000,'{"uid":"04230"}');
INSERT INTO "events" VALUES(111,'room-2','e1',57,'room.free',1800213120000,1800213120000,'{}');
INSERT INTO "events" VALUES(112,'room-1','e1',55,'room.occupied',1800214800000,1800214800000,'{}');
INSERT INTO "events" VALUES(113,'room-1','e1',56,'garment.in',1800214860000,1800214860000,'{"uid":"04240","tech":"ntag213","gtin":"09506000134376","serial":"SN240"}');
INSERT INTO "events" VALUES(114,'room-1','e1',57,'garment.in',1800214920000,1800214920000,'{"uid":"04241","tech":"ntag213","gtin":"09506000134383","serial":"SN241"}');
INSERT INTO "events" VALUES(115,'room-1','e1',58,'garment.out',1800215520000,1800215520000,'{"uid":"04240"}');
INSERT INTO "events" VALUES(116,'room-1','e1',59,'garment.out',1800215520000,1800215520000,'{"uid":"04241"}');
INSERT INTO "events" VALUES(117,'room-1','e1',60,'room.free',1800215520000,1800215520000,'{}');
INSERT INTO "events" VALUES(118,'room-2','e1',58,'room.occupied',1800217200000,1800217200000,'{}');
INSERT INTO "events" VALUES(119,'room-2','e1',59,'garment.in',1800217260000,1800217260000,'{"uid":"04250","tech":"ntag213","gtin":"09506000134383","serial":"SN250"}');
INSERT INTO "events" VALUES(120,'room-2','e1',60,'garment.in',1800217320000,1800217320000,'{"uid":"04251","tech":"ntag213","gtin":"09506000134352","serial":"SN251"}');
INSERT INTO "events" VALUES(121,'room-2','e1',61,'garment.in',1800217380000,1800217380000,'{"uid":"04252","tech":"ntag213","gtin":"09506000134369","serial":"SN252"}');
INSERT INTO "events" VALUES(122,'room-2','e1',62,'call.pressed',1800217380000,1800217380000,'{}');
INSERT INTO "events" VALUES(123,'room-2','e1',63,'garment.out',1800217980000,1800217980000,'{"uid":"04250"}');
INSERT INTO "events" VALUES(124,'room-2','e1',64,'garment.out',1800217980000,1800217980000,'{"uid":"04251"}');
INSERT INTO "events" VALUES(125,'room-2','e1',65,'garment.out',1800217980000,1800217980000,'{"uid":"04252"}');
INSERT INTO "events" VALUES(126,'room-2','e1',66,'room.free',1800217980000,1800217980000,'{}');
INSERT INTO "events" VALUES(127,'room-1','e1',61,'room.occupied',1800295200000,1800295200000,'{}');
INSERT INTO "events" VALUES(128,'room-1','e1',62,'garment.in',1800295200000,1800295200000,'{"uid":"04live","tech":"ntag213","gtin":"09506000134376","serial":"SNlive"}');
INSERT INTO "events" VALUES(129,'room-1','e1',63,'call.pressed',1800295200000,1800295200000,'{}');
INSERT INTO "events" VALUES(130,'lk-u1','e1',1,'door.opened',1800028800000,1800028800000,'{"compartment":1,"why":"load","order":null}');
INSERT INTO "events" VALUES(131,'lk-u1','e1',2,'door.closed',1800028800000,1800028800000,'{"compartment":1,"why":"load","open_ms":900,"occupied":1}');
INSERT INTO "events" VALUES(132,'lk-u1','e1',3,'order.loaded',1800028800000,1800028800000,'{"compartment":1,"occupied":1}');
INSERT INTO "events" VALUES(133,'lk-u1','e1',4,'door.opened',1800030660000,1800030660000,'{"compartment":1,"why":"pickup","order":"o-1"}');
INSERT INTO "events" VALUES(134,'lk-u1','e1',5,'pickup.collected',1800030660000,1800030660000,'{"compartment":1,"order":"o-1"}');
INSERT INTO "events" VALUES(135,'lk-u1','e1',6,'door.opened',1800030660000,1800030660000,'{"compartment":5,"why":"load","order":null}');
INSERT INTO "events" VALUES(136,'lk-u1','e1',7,'door.closed',1800030660000,1800030660000,'{"compartment":5,"why":"load","open_ms":900,"occupied":1}');
INSERT INTO "events" VALUES(137,'lk-u1','e1',8,'order.loaded',1800030660000,1800030660000,'{"compartment":5,"occupied":1}');
INSERT INTO "events" VALUES(138,'lk-u1','e1',9,'door.opened',1800032520000,1800032520000,'{"compartment":5,"why":"pickup","order":"o-2"}');
INSERT INTO "events" VALUES(139,'lk-u1','e1',10,'pickup.collected',1800032520000,1800032520000,'{"compartment":5,"order":"o-2"}');
INSERT INTO "events" VALUES(140,'lk-u1','e1',11,'door.opened',1800032520000,1800032520000,'{"compartment":9,"why":"load","order":null}');
INSERT INTO "events" VALUES(141,'lk-u1','e1',12,'door.closed',1800032520000,1800032520000,'{"compartment":9,"why":"load","open_ms":900,"occupied":1}');
INSERT INTO "events" VALUES(142,'lk-u1','e1',13,'order.loaded',1800032520000,1800032520000,'{"compartment":9,"occupied":1}');
INSERT INTO "events" VALUES(143,'lk-u1','e1',14,'door.opened',1800115200000,1800115200000,'{"compartment":1,"why":"load","order":null}');
INSERT INTO "events" VALUES(144,'lk-u1','e1',15,'door.closed',1800115200000,1800115200000,'{"compartment":1,"why":"load","open_ms":900,"occupied":1}');
INSERT INTO "events" VALUES(145,'lk-u1','e1',16,'order.loaded',1800115200000,1800115200000,'{"compartment":1,"occupied":1}');
INSERT INTO "events" VALUES(146,'lk-u1','e1',17,'door.opened',1800117060000,1800117060000,'{"compartment":1,"why":"pickup","order":"o-4"}');
INSERT INTO "events" VALUES(147,'lk-u1','e1',18,'pickup.collected',1800117060000,1800117060000,'{"compartment":1,"order":"o-4"}');
INSERT INTO "events" VALUES(148,'lk-u1','e1',19,'door.opened',1800117060000,1800117060000,'{"compartment":10,"why":"load","order":null}');
INSERT INTO "events" VALUES(149,'lk-u1','e1',20,'door.closed',1800117060000,1800117060000,'{"compartment":10,"why":"load","open_ms":900,"occupied":1}');
INSERT INTO "events" VALUES(150,'lk-u1','e1',21,'order.loaded',1800117060000,1800117060000,'{"compartment":10,"occupied":1}');
INSERT INTO "events" VALUES(151,'lk-u1','e1',22,'door.opened',1800201600000,1800201600000,'{"compartment":5,"why":"load","order":null}');
INSERT INTO "events" VALUES(152,'lk-u1','e1',23,'door.closed',1800201600000,1800201600000,'{"compartment":5,"why":"load","open_ms":900,"occupied":1}');
INSERT INTO "events" VALUES(153,'lk-u1','e1',24,'order.loaded',1800201600000,1800201600000,'{"compartment":5,"occupied":1}');
INSERT INTO "events" VALUES(154,'lk-u1','e1',25,'door.opened',1800203460000,1800203460000,'{"compartment":5,"why":"pickup","order":"o-8"}');
INSERT INTO "events" VALUES(155,'lk-u1','e1',26,'pickup.collected',1800203460000,1800203460000,'{"compartment":5,"order":"o-8"}');
INSERT INTO "events" VALUES(156,'lk-u1','e1',27,'door.opened',1800203460000,1800203460000,'{"compartment":11,"why":"load","order":null}');
INSERT INTO "events" VALUES(157,'lk-u1','e1',28,'door.closed',1800203460000,1800203460000,'{"compartment":11,"why":"load","open_ms":900,"occupied":1}');
INSERT INTO "events" VALUES(158,'lk-u1','e1',29,'order.loaded',1800203460000,1800203460000,'{"compartment":11,"occupied":1}');
INSERT INTO "events" VALUES(159,'lk-u1','e1',30,'door.opened',1800288000000,1800288000000,'{"compartment":5,"why":"load","order":null}');
INSERT INTO "events" VALUES(160,'lk-u1','e1',31,'door.closed',1800288000000,1800288000000,'{"compartment":5,"why":"load","open_ms":900,"occupied":1}');
INSERT INTO "events" VALUES(161,'lk-u1','e1',32,'order.loaded',1800288000000,1800288000000,'{"compartment":5,"occupied":1}');
INSERT INTO "events" VALUES(162,'lk-u1','e1',33,'door.opened',1800289860000,1800289860000,'{"compartment":5,"why":"pickup","order":"o-11"}');
INSERT INTO "events" VALUES(163,'lk-u1','e1',34,'pickup.collected',1800289860000,1800289860000,'{"compartment":5,"order":"o-11"}');
INSERT INTO "events" VALUES(164,'lk-u1','e1',35,'door.opened',1800289860000,1800289860000,'{"compartment":12,"why":"load","order":null}');
INSERT INTO "events" VALUES(165,'lk-u1','e1',36,'door.closed',1800289860000,1800289860000,'{"compartment":12,"why":"load","open_ms":900,"occupied":1}');
INSERT INTO "events" VALUES(166,'lk-u1','e1',37,'order.loaded',1800289860000,1800289860000,'{"compartment":12,"occupied":1}');
CREATE TABLE fitting (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        state   TEXT NOT NULL,              -- JSON: FittingRooms.to_dict()
        cursor  INTEGER NOT NULL,           -- events.id of the last event applied
        updated INTEGER NOT NULL);
INSERT INTO "fitting" VALUES(1,'{"rules":{"swap_n":3,"swap_window_ms":600000,"attribution_ms":7200000},"rooms":{"room-1":{"occupied":true,"session":"s-31","garments":{"09506000134376/SNlive":{"uid":"04live","gtin":"09506000134376","serial":"SNlive","since":1800295200000}},"occupied_since":1800295200000},"room-2":{"occupied":false,"session":null,"garments":{},"occupied_since":1800217200000}},"sessions":{"s-1":{"id":"s-1","room":"room-1","start":1800032400000,"end":1800033120000,"why":"occupied","tried":["09506000134352"],"items":{"09506000134352/SN000":{"gtin":"09506000134352","ins":2,"outs":2}},"swaps":[1800032520000],"alerted":false,"converted":["09506000134352"]},"s-3":{"id":"s-3","room":"room-2","start":1800034800000,"end":1800035520000,"why":"occupied","tried":["09506000134369","09506000134376"],"items":{"09506000134369/SN010":{"gtin":"09506000134369","ins":1,"outs":1},"09506000134376/SN011":{"gtin":"09506000134376","ins":1,"outs":1}},"swaps":[],"alerted":false,"converted":["09506000134369","09506000134376"]},"s-5":{"id":"s-5","room":"room-1","start":1800037200000,"end":1800037980000,"why":"occupied","tried":["09506000134376","09506000134383","09506000134352"],"items":{"09506000134376/SN020":{"gtin":"09506000134376","ins":1,"outs":1},"09506000134383/SN021":{"gtin":"09506000134383","ins":1,"outs":1},"09506000134352/SN022":{"gtin":"09506000134352","ins":1,"outs":1}},"swaps":[],"alerted":false,"converted":["09506000134376","09506000134383"]},"s-6":{"id":"s-6","room":"room-2","start":1800039600000,"end":1800040320000,"why":"occupied","tried":["09506000134383"],"items":{"09506000134383/SN030":{"gtin":"09506000134383","ins":2,"outs":2}},"swaps":[1800039720000],"alerted":false,"converted":["09506000134383"]},"s-8":{"id":"s-8","room":"room-1","start":1800042000000,"end":1800042720000,"why":"occupied","tried":["09506000134352","09506000134369"],"items":{"09506000134352/SN040":{"gtin":"09506000134352","ins":1,"outs":1},"09506000134369/SN041":{"gtin":"09506000134369","ins":1,"outs":1}},"swaps":[],"alerted":false,"converted":["09506000134352"]},"s-9":{"id":"s-9","room":"room-2","start":1800044400000,"end":1800045180000,"why":"occupied","tried":["09506000134369","09506000134376","09506000134383"],"items":{"09506000134369/SN050":{"gtin":"09506000134369","ins":1,"outs":1},"09506000134376/SN051":{"gtin":"09506000134376","ins":1,"outs":1},"09506000134383/SN052":{"gtin":"09506000134383","ins":1,"outs":1}},"swaps":[],"alerted":false,"converted":[]},"s-11":{"id":"s-11","room":"room-1","start":1800118800000,"end":1800119520000,"why":"occupied","tried":["09506000134369"],"items":{"09506000134369/SN100":{"gtin":"09506000134369","ins":2,"outs":2}},"swaps":[1800118920000],"alerted":false,"converted":["09506000134369"]},"s-13":{"id":"s-13","room":"room-2","start":1800121200000,"end":1800121920000,"why":"occupied","tried":["09506000134376","09506000134383"],"items":{"09506000134376/SN110":{"gtin":"09506000134376","ins":1,"outs":1},"09506000134383/SN111":{"gtin":"09506000134383","ins":1,"outs":1}},"swaps":[],"alerted":false,"converted":["09506000134383","09506000134376"]},"s-15":{"id":"s-15","room":"room-1","start":1800123600000,"end":1800124380000,"why":"occupied","tried":["09506000134383","09506000134352","09506000134369"],"items":{"09506000134383/SN120":{"gtin":"09506000134383","ins":1,"outs":1},"09506000134352/SN121":{"gtin":"09506000134352","ins":1,"outs":1},"09506000134369/SN122":{"gtin":"09506000134369","ins":1,"outs":1}},"swaps":[],"alerted":false,"converted":["09506000134383"]},"s-16":{"id":"s-16","room":"room-2","start":1800126000000,"end":1800126720000,"why":"occupied","tried":["09506000134352"],"items":{"09506000134352/SN130":{"gtin":"09506000134352","ins":2,"outs":2}},"swaps":[1800126120000],"alerted":false,"converted":["09506000134352"]},"s-18":{"id":"s-18","room":"room-1","start":1800128400000,"end":1800129120000,"why":"occupied","tried":["09506000134369","09506000134376"],"items":{"09506000134369/SN140":{"gtin":"09506000134369","ins":1,"outs":1},"09506000134376/SN141":{"gtin":"09506000134376","ins":1,"outs":1}},"swaps":[],"alerted":false,"converted":["09506000134369"]},"s-19":{"id":"s-19","room":"room-2","start":1800130800000,"end":1800131580000,"why":"occupied","tried":["09506000134376","09506000134383","09506000134352"],"items":{"09506000134376/SN150":{"gtin":"09506000134376","ins":1,"outs":1},"09506000134383/SN151":{"gtin":"09506000134383","ins":1,"outs":1},"09506000134352/SN152":{"gtin":"09506000134352","ins":1,"outs":1}},"swaps":[],"alerted":false,"converted":[]},"s-21":{"id":"s-21","room":"room-1","start":1800205200000,"end":1800205920000,"why":"occupied","tried":["09506000134376"],"items":{"09506000134376/SN200":{"gtin":"09506000134376","ins":2,"outs":2}},"swaps":[1800205320000],"alerted":false,"converted":["09506000134376"]},"s-23":{"id":"s-23","room":"room-2","start":1800207600000,"end":1800208320000,"why":"occupied","tried":["09506000134383","09506000134352"],"items":{"09506000134383/SN210":{"gtin":"09506000134383","ins":1,"outs":1},"09506000134352/SN211":{"gtin":"09506000134352","ins":1,"outs":1}},"swaps":[],"alerted":false,"converted":["09506000134383","09506000134352"]},"s-25":{"id":"s-25","room":"room-1","start":1800210000000,"end":1800210780000,"why":"occupied","tried":["09506000134352","09506000134369","09506000134376"],"items":{"09506000134352/SN220":{"gtin":"09506000134352","ins":1,"outs":1},"09506000134369/SN221":{"gtin":"09506000134369","ins":1,"outs":1},"09506000134376/SN222":{"gtin":"09506000134376","ins":1,"outs":1}},"swaps":[],"alerted":false,"converted":["09506000134352"]},"s-26":{"id":"s-26","room":"room-2","start":1800212400000,"end":1800213120000,"why":"occupied","tried":["09506000134369"],"items":{"09506000134369/SN230":{"gtin":"09506000134369","ins":2,"outs":2}},"swaps":[1800212520000],"alerted":false,"converted":["09506000134369"]},"s-28":{"id":"s-28","room":"room-1","start":1800214800000,"end":1800215520000,"why":"occupied","tried":["09506000134376","09506000134383"],"items":{"09506000134376/SN240":{"gtin":"09506000134376","ins":1,"outs":1},"09506000134383/SN241":{"gtin":"09506000134383","ins":1,"outs":1}},"swaps":[],"alerted":false,"converted":["09506000134376","09506000134383"]},"s-29":{"id":"s-29","room":"room-2","start":1800217200000,"end":1800217980000,"why":"occupied","tried":["09506000134383","09506000134352","09506000134369"],"items":{"09506000134383/SN250":{"gtin":"09506000134383","ins":1,"outs":1},"09506000134352/SN251":{"gtin":"09506000134352","ins":1,"outs":1},"09506000134369/SN252":{"gtin":"09506000134369","ins":1,"outs":1}},"swaps":[],"alerted":false,"converted":[]},"s-31":{"id":"s-31","room":"room-1","start":1800295200000,"end":null,"why":"occupied","tried":["09506000134376"],"items":{"09506000134376/SNlive":{"gtin":"09506000134376","ins":1,"outs":0}},"swaps":[],"alerted":false,"converted":[]}},"requests":{"r-2":{"id":"r-2","room":"room-1","kind":"size","state":"cancelled","created":1800032520000,"updated":1800033120000,"reason":"room-free","via":"staff","history":[["open",1800032520000],["acknowledged",1800032520000],["cancelled",1800033120000]],"session":"s-1","gtin":"09506000134369","instead_of":"09506000134352","where":"stockroom","by":"ana"},"r-4":{"id":"r-4","room":"room-2","kind":"call","state":"done","created":1800034920000,"updated":1800034920000,"reason":null,"via":"staff","history":[["open",1800034920000],["acknowledged",1800034920000],["done",1800034920000]],"session":"s-3","source":"button","garments":[{"key":"09506000134369/SN010","gtin":"09506000134369","serial":"SN010","uid":"04010"},{"key":"09506000134376/SN011","gtin":"09506000134376","serial":"SN011","uid":"04011"}],"by":"ben"},"r-7":{"id":"r-7","room":"room-2","kind":"size","state":"cancelled","created":1800039720000,"updated":1800040320000,"reason":"room-free","via":"staff","history":[["open",1800039720000],["cancelled",1800040320000]],"session":"s-6","gtin":"09506000134369","instead_of":"09506000134383","where":"stockroom"},"r-10":{"id":"r-10","room":"room-2","kind":"call","state":"done","created":1800044580000,"updated":1800044580000,"reason":null,"via":"staff","history":[["open",1800044580000],["acknowledged",1800044580000],["done",1800044580000]],"session":"s-9","source":"button","garments":[{"key":"09506000134369/SN050","gtin":"09506000134369","serial":"SN050","uid":"04050"},{"key":"09506000134376/SN051","gtin":"09506000134376","serial":"SN051","uid":"04051"},{"key":"09506000134383/SN052","gtin":"09506000134383","serial":"SN052","uid":"04052"}],"by":"ben"},"r-12":{"id":"r-12","room":"room-1","kind":"size","state":"cancelled","created":1800118920000,"updated":1800119520000,"reason":"room-free","via":"staff","history":[["open",1800118920000],["acknowledged",1800118920000],["cancelled",1800119520000]],"session":"s-11","gtin":"09506000134352","instead_of":"09506000134369","where":"floor","by":"ana"},"r-14":{"id":"r-14","room":"room-2","kind":"call","state":"done","created":1800121320000,"updated":1800121320000,"reason":null,"via":"staff","history":[["open",1800121320000],["acknowledged",1800121320000],["done",1800121320000]],"session":"s-13","source":"button","garments":[{"key":"09506000134376/SN110","gtin":"09506000134376","serial":"SN110","uid":"04110"},{"key":"09506000134383/SN111","gtin":"09506000134383","serial":"SN111","uid":"04111"}],"by":"ben"},"r-17":{"id":"r-17","room":"room-2","kind":"size","state":"cancelled","created":1800126120000,"updated":1800126720000,"reason":"room-free","via":"staff","history":[["open",1800126120000],["cancelled",1800126720000]],"session":"s-16","gtin":"09506000134369","instead_of":"09506000134352","where":"stockroom"},"r-20":{"id":"r-20","room":"room-2","kind":"call","state":"done","created":1800130980000,"updated":1800130980000,"reason":null,"via":"staff","history":[["open",1800130980000],["acknowledged",1800130980000],["done",1800130980000]],"session":"s-19","source":"button","garments":[{"key":"09506000134376/SN150","gtin":"09506000134376","serial":"SN150","uid":"04150"},{"key":"09506000134383/SN151","gtin":"09506000134383","serial":"SN151","uid":"04151"},{"key":"09506000134352/SN152","gtin":"09506000134352","serial":"SN152","uid":"04152"}],"by":"ben"},"r-22":{"id":"r-22","room":"room-1","kind":"size","state":"cancelled","created":1800205320000,"updated":1800205920000,"reason":"room-free","via":"staff","history":[["open",1800205320000],["acknowledged",1800205320000],["cancelled",1800205920000]],"session":"s-21","gtin":"09506000134369","instead_of":"09506000134376","where":"stockroom","by":"ana"},"r-24":{"id":"r-24","room":"room-2","kind":"call","state":"done","created":1800207720000,"updated":1800207720000,"reason":null,"via":"staff","history":[["open",1800207720000],["acknowledged",1800207720000],["done",1800207720000]],"session":"s-23","source":"button","garments":[{"key":"09506000134383/SN210","gtin":"09506000134383","serial":"SN210","uid":"04210"},{"key":"09506000134352/SN211","gtin":"09506000134352","serial":"SN211","uid":"04211"}],"by":"ben"},"r-27":{"id":"r-27","room":"room-2","kind":"size","state":"cancelled","created":1800212520000,"updated":1800213120000,"reason":"room-free","via":"staff","history":[["open",1800212520000],["cancelled",1800213120000]],"session":"s-26","gtin":"09506000134352","instead_of":"09506000134369","where":"floor"},"r-30":{"id":"r-30","room":"room-2","kind":"call","state":"done","created":1800217380000,"updated":1800217380000,"reason":null,"via":"staff","history":[["open",1800217380000],["acknowledged",1800217380000],["done",1800217380000]],"session":"s-29","source":"button","garments":[{"key":"09506000134383/SN250","gtin":"09506000134383","serial":"SN250","uid":"04250"},{"key":"09506000134352/SN251","gtin":"09506000134352","serial":"SN251","uid":"04251"},{"key":"09506000134369/SN252","gtin":"09506000134369","serial":"SN252","uid":"04252"}],"by":"ben"},"r-32":{"id":"r-32","room":"room-1","kind":"call","state":"open","created":1800295200000,"updated":1800295200000,"reason":null,"via":"staff","history":[["open",1800295200000]],"session":"s-31","source":"button","garments":[{"key":"09506000134376/SNlive","gtin":"09506000134376","serial":"SNlive","uid":"04live"}]}},"purchases":[{"receipt":"R1","at":1800034920000,"lines":[{"gtin":"09506000134352","qty":1,"sessions":["s-1"]},{"gtin":"09506000134383","qty":1,"sessions":[]}]},{"receipt":"R2","at":1800039780000,"lines":[{"gtin":"09506000134376","qty":1,"sessions":["s-5"]},{"gtin":"09506000134383","qty":1,"sessions":["s-5"]}]},{"receipt":"R3","at":1800044520000,"lines":[{"gtin":"09506000134352","qty":1,"sessions":["s-8"]},{"gtin":"09506000134383","qty":1,"sessions":["s-6"]}]},{"receipt":"CSV0-0","at":1800033600000,"lines":[{"gtin":"09506000134352","qty":1,"sessions":[]}]},{"receipt":"CSV0-1","at":1800036000000,"lines":[{"gtin":"09506000134369","qty":1,"sessions":["s-3"]}]},{"receipt":"CSV0-2","at":1800038400000,"lines":[{"gtin":"09506000134376","qty":1,"sessions":["s-3"]}]},{"receipt":"CSV0-3","at":1800040800000,"lines":[{"gtin":"09506000134383","qty":1,"sessions":[]}]},{"receipt":"R4","at":1800121320000,"lines":[{"gtin":"09506000134369","qty":1,"sessions":["s-11"]},{"gtin":"09506000134383","qty":1,"sessions":[]}]},{"receipt":"R5","at":1800126180000,"lines":[{"gtin":"09506000134383","qty":1,"sessions":["s-15"]},{"gtin":"09506000134383","qty":1,"sessions":["s-13"]}]},{"receipt":"R6","at":1800130920000,"lines":[{"gtin":"09506000134369","qty":1,"sessions":["s-18"]},{"gtin":"09506000134383","qty":1,"sessions":[]}]},{"receipt":"CSV1-0","at":1800120000000,"lines":[{"gtin":"09506000134369","qty":1,"sessions":[]}]},{"receipt":"CSV1-1","at":1800122400000,"lines":[{"gtin":"09506000134376","qty":1,"sessions":["s-13"]}]},{"receipt":"CSV1-2","at":1800124800000,"lines":[{"gtin":"09506000134383","qty":1,"sessions":[]}]},{"receipt":"CSV1-3","at":1800127200000,"lines":[{"gtin":"09506000134352","qty":1,"sessions":["s-16"]}]},{"receipt":"R7","at":1800207720000,"lines":[{"gtin":"09506000134376","qty":1,"sessions":["s-21"]},{"gtin":"09506000134383","qty":1,"sessions":[]}]},{"receipt":"R8","at":1800212580000,"lines":[{"gtin":"09506000134352","qty":1,"sessions":["s-25"]},{"gtin":"09506000134383","qty":1,"sessions":["s-23"]}]},{"receipt":"R9","at":1800217320000,"lines":[{"gtin":"09506000134376","qty":1,"sessions":["s-28"]},{"gtin":"09506000134383","qty":1,"sessions":["s-28"]}]},{"receipt":"CSV2-0","at":1800206400000,"lines":[{"gtin":"09506000134376","qty":1,"sessions":[]}]},{"receipt":"CSV2-1","at":1800208800000,"lines":[{"gtin":"09506000134383","qty":1,"sessions":[]}]},{"receipt":"CSV2-2","at":1800211200000,"lines":[{"gtin":"09506000134352","qty":1,"sessions":["s-23"]}]},{"receipt":"CSV2-3","at":1800213600000,"lines":[{"gtin":"09506000134369","qty":1,"sessions":["s-26"]}]}],"footfall":[[1800072000000,120],[1800158400000,121],[1800244800000,122]],"n":32}',129,1800295200000);
CREATE TABLE fw_cursor (id INTEGER PRIMARY KEY CHECK (id = 1), cursor INTEGER NOT NULL);
INSERT INTO "fw_cursor" VALUES(1,0);
CREATE TABLE fw_rollouts (
        id      TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        status  TEXT NOT NULL,                 -- running | done | halted
        state   TEXT NOT NULL,                 -- JSON: rollout.Rollout
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL);
CREATE TABLE lockers (
        bank    TEXT PRIMARY KEY,
        state   TEXT NOT NULL,                 -- JSON: {"bank": to_dict(), "meta": {...}}
        cursor  INTEGER NOT NULL DEFAULT 0,    -- events.id of the last event applied
        updated INTEGER NOT NULL
    );
INSERT INTO "lockers" VALUES('lk-u1','{"bank":{"id":"lk-u1","salt":"lk-u1","reserve_s":14400,"pickup_window_s":259200,"code_digits":6,"lockout":{"after":3,"window_s":300.0,"lock_s":[600.0,1200.0,1800.0],"reset_s":3600.0},"lockout_state":{"failures":[],"level":0,"until":null,"last_failure":null},"compartments":[{"id":1,"size":"S","order_id":null,"out_of_order":false,"blocked":null},{"id":2,"size":"S","order_id":null,"out_of_order":false,"blocked":null},{"id":3,"size":"S","order_id":null,"out_of_order":false,"blocked":null},{"id":4,"size":"S","order_id":null,"out_of_order":false,"blocked":null},{"id":5,"size":"M","order_id":null,"out_of_order":false,"blocked":null},{"id":6,"size":"M","order_id":null,"out_of_order":false,"blocked":null},{"id":7,"size":"M","order_id":null,"out_of_order":false,"blocked":null},{"id":8,"size":"M","order_id":null,"out_of_order":false,"blocked":null},{"id":9,"size":"L","order_id":"o-3","out_of_order":false,"blocked":null},{"id":10,"size":"L","order_id":"o-6","out_of_order":false,"blocked":null},{"id":11,"size":"L","order_id":"o-9","out_of_order":false,"blocked":null},{"id":12,"size":"L","order_id":"o-12","out_of_order":false,"blocked":null}],"orders":[{"id":"o-1","size":"S","compartment_id":1,"state":"collected","assigned_at":1800028800.0,"reserve_until":1800043200.0,"ready_at":1800028860.0,"pickup_until":1800288060.0,"code_mac":"20a4d1ee2a70d720e0076d261d8f1776dea9b984cdc3922e80d3e4f3d3a8e7e2","code_used_at":1800030660.0,"needs_code":false,"closed_at":1800030660.0},{"id":"o-2","size":"M","compartment_id":5,"state":"collected","assigned_at":1800030660.0,"reserve_until":1800045060.0,"ready_at":1800030720.0,"pickup_until":1800289920.0,"code_mac":"a24ebeac40f36fb5f4ee6418066e16506e4c68dda4f7c0450e173c8543a7e912","code_used_at":1800032520.0,"needs_code":false,"closed_at":1800032520.0},{"id":"o-3","size":"L","compartment_id":9,"state":"expired","assigned_at":1800032520.0,"reserve_until":1800046920.0,"ready_at":1800032580.0,"pickup_until":1800291780.0,"code_mac":"f2ac61996f8530d8fa177a9e31f7ddc93cda6c3ef202393c232a6abba16e7eef","code_used_at":null,"needs_code":false,"closed_at":null},{"id":"o-4","size":"S","compartment_id":1,"state":"collected","assigned_at":1800115200.0,"reserve_until":1800129600.0,"ready_at":1800115260.0,"pickup_until":1800374460.0,"code_mac":"bed186c7edf9a909b0d92b34168b4d1cb9a07fa321a113b0ada036392f266a72","code_used_at":1800117060.0,"needs_code":false,"closed_at":1800117060.0},{"id":"o-5","size":"M","compartment_id":5,"state":"cancelled","assigned_at":1800117060.0,"reserve_until":1800131460.0,"ready_at":null,"pickup_until":null,"code_mac":null,"code_used_at":null,"needs_code":false,"closed_at":1800117060.0},{"id":"o-6","size":"L","compartment_id":10,"state":"ready","assigned_at":1800117060.0,"reserve_until":1800131460.0,"ready_at":1800117120.0,"pickup_until":1800376320.0,"code_mac":"dfac452eefe31060ddaa493c6fb25dd1d2c97d2a7e1a66e8a711b06135e609a5","code_used_at":null,"needs_code":false,"closed_at":null},{"id":"o-7","size":"S","compartment_id":1,"state":"cancelled","assigned_at":1800201600.0,"reserve_until":1800216000.0,"ready_at":null,"pickup_until":null,"code_mac":null,"code_used_at":null,"needs_code":false,"closed_at":1800288000.0},{"id":"o-8","size":"M","compartment_id":5,"state":"collected","assigned_at":1800201600.0,"reserve_until":1800216000.0,"ready_at":1800201660.0,"pickup_until":1800460860.0,"code_mac":"867f6840b79946d0a9727dd9de7c34a4b5307a094ea13bb4a2c66022f62b0983","code_used_at":1800203460.0,"needs_code":false,"closed_at":1800203460.0},{"id":"o-9","size":"L","compartment_id":11,"state":"ready","assigned_at":1800203460.0,"reserve_until":1800217860.0,"ready_at":1800203520.0,"pickup_until":1800462720.0,"code_mac":"e29e86b1d3a21c3041f0e8034ddce06563b93e9cbef72f835480ac7ac610c4c6","code_used_at":null,"needs_code":false,"closed_at":null},{"id":"o-10","size":"S","compartment_id":1,"state":"cancelled","assigned_at":1800288000.0,"reserve_until":1800302400.0,"ready_at":null,"pickup_until":null,"code_mac":null,"code_used_at":null,"needs_code":false,"closed_at":1800288000.0},{"id":"o-11","size":"M","compartment_id":5,"state":"collected","assigned_at":1800288000.0,"reserve_until":1800302400.0,"ready_at":1800288060.0,"pickup_until":1800547260.0,"code_mac":"795c690b97c91914fd7b0f615407d8f7128897bcfb6685c648ad654c0c908673","code_used_at":1800289860.0,"needs_code":false,"closed_at":1800289860.0},{"id":"o-12","size":"L","compartment_id":12,"state":"ready","assigned_at":1800289860.0,"reserve_until":1800304260.0,"ready_at":1800289920.0,"pickup_until":1800549120.0,"code_mac":"977d9d61ec9d39448273504eb54fa2f45df735f7ecb4e59edd6a42bbb5913911","code_used_at":null,"needs_code":false,"closed_at":null}],"verifier":"hmac-sha256","macs":{"20a4d1ee2a70d720e0076d261d8f1776dea9b984cdc3922e80d3e4f3d3a8e7e2":"o-1","a24ebeac40f36fb5f4ee6418066e16506e4c68dda4f7c0450e173c8543a7e912":"o-2","f2ac61996f8530d8fa177a9e31f7ddc93cda6c3ef202393c232a6abba16e7eef":"o-3","692458a65f50b1366452e56d412bd8a641713e4b958f856539b06a47df2e8289":"o-4","bed186c7edf9a909b0d92b34168b4d1cb9a07fa321a113b0ada036392f266a72":"o-4","dfac452eefe31060ddaa493c6fb25dd1d2c97d2a7e1a66e8a711b06135e609a5":"o-6","5732645750683c409d6e67a3620cb3bd5ac8d23fb10718daaa84343e1017041a":"o-8","867f6840b79946d0a9727dd9de7c34a4b5307a094ea13bb4a2c66022f62b0983":"o-8","e29e86b1d3a21c3041f0e8034ddce06563b93e9cbef72f835480ac7ac610c4c6":"o-9","795c690b97c91914fd7b0f615407d8f7128897bcfb6685c648ad654c0c908673":"o-11","17225ba0385ae2d917ebada31d0a835aa4652ddfb1e71aefccfdeb8ee3814ce5":"o-12","977d9d61ec9d39448273504eb54fa2f45df735f7ecb4e59edd6a42bbb5913911":"o-12"}},"meta":{"code_cmd":{"o-1":"lk:o-1:set_order:20a4d1ee2a70d720","o-2":"lk:o-2:set_order:a24ebeac40f36fb5","o-3":"lk:o-3:set_order:f2ac61996f8530d8","o-4":"lk:o-4:set_order:bed186c7edf9a909","o-6":"lk:o-6:set_order:dfac452eefe31060","o-8":"lk:o-8:set_order:867f6840b79946d0","o-9":"lk:o-9:set_order:e29e86b1d3a21c30","o-11":"lk:o-11:set_order:795c690b97c91914","o-12":"lk:o-12:set_order:977d9d61ec9d3944"},"ops":{"reissue-o-4":{"op":"reissue o-4","result":{"order":"o-4","compartment":1,"state":"ready","expires_at":1800374460.0,"ready_id":"746f7cf26d78f6c1"}},"cancel-o-5":{"op":"cancel o-5","result":{"order":"o-5","size":"M","compartment":5,"state":"cancelled","assigned_at":1800117060.0,"reserve_until":1800131460.0,"ready_at":null,"pickup_until":null,"code_used_at":null,"needs_code":false,"closed_at":1800117060.0}},"reissue-o-8":{"op":"reissue o-8","result":{"order":"o-8","compartment":5,"state":"ready","expires_at":1800460860.0,"ready_id":"1213415f2864da9f"}},"cancel-o-10":{"op":"cancel o-10","result":{"order":"o-10","size":"S","compartment":1,"state":"cancelled","assigned_at":1800288000.0,"reserve_until":1800302400.0,"ready_at":null,"pickup_until":null,"code_used_at":null,"needs_code":false,"closed_at":1800288000.0}},"reissue-o-12":{"op":"reissue o-12","result":{"order":"o-12","compartment":12,"state":"ready","expires_at":1800549120.0,"ready_id":"d368d2bf78e252c4"}}}}}',166,1800295200000);
CREATE TABLE purchases (
        receipt  TEXT PRIMARY KEY,
        at       INTEGER NOT NULL,              -- unix ms
        lines    TEXT NOT NULL,                 -- JSON [{gtin, qty, sessions}]
        units    INTEGER NOT NULL,
        source   TEXT NOT NULL,                 -- api | csv | fitting (POST /fitting/purchases)
        recorded INTEGER NOT NULL);
CREATE TABLE rejections (
        reason TEXT PRIMARY KEY,
        count  INTEGER NOT NULL
    );
CREATE TABLE samples (
        id          TEXT PRIMARY KEY,
        title       TEXT NOT NULL,
        image       TEXT,
        url         TEXT,
        description TEXT,
        uid         TEXT UNIQUE
    , seed TEXT, gtin TEXT);
CREATE TABLE stream (
        id    INTEGER PRIMARY KEY AUTOINCREMENT,
        kind  TEXT NOT NULL,                   -- event | device | command
        data  TEXT NOT NULL
    );
INSERT INTO "stream" VALUES(1,'event','{"id":1,"device":"room-1","epoch":"e1","seq":1,"type":"room.occupied","t_device":1800032400000,"t_gateway":1800032400000,"body":{}}');
INSERT INTO "stream" VALUES(2,'event','{"id":2,"device":"room-1","epoch":"e1","seq":2,"type":"garment.in","t_device":1800032460000,"t_gateway":1800032460000,"body":{"uid":"04000","tech":"ntag213","gtin":"09506000134352","serial":"SN000"}}');
INSERT INTO "stream" VALUES(3,'fitting','{"type":"fitting.session.started","room":"room-1","at":1800032400000,"session":"s-1","why":"occupied","device":"room-1"}');
INSERT INTO "stream" VALUES(4,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800032460000,"session":"s-1","key":"09506000134352/SN000","uid":"04000","gtin":"09506000134352","serial":"SN000","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(5,'event','{"id":3,"device":"room-1","epoch":"e1","seq":3,"type":"garment.out","t_device":1800032520000,"t_gateway":1800032520000,"body":{"uid":"04000"}}');
INSERT INTO "stream" VALUES(6,'event','{"id":4,"device":"room-1","epoch":"e1","seq":4,"type":"garment.in","t_device":1800032520000,"t_gateway":1800032520000,"body":{"uid":"04000","tech":"ntag213","gtin":"09506000134352","serial":"SN000"}}');
INSERT INTO "stream" VALUES(7,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800032520000,"session":"s-1","key":"09506000134352/SN000","uid":"04000","gtin":"09506000134352","serial":"SN000","device":"room-1"}');
INSERT INTO "stream" VALUES(8,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800032520000,"session":"s-1","key":"09506000134352/SN000","uid":"04000","gtin":"09506000134352","serial":"SN000","swap":true,"device":"room-1"}');
INSERT INTO "stream" VALUES(9,'fitting','{"type":"fitting.request","room":"room-1","at":1800032520000,"request":{"id":"r-2","room":"room-1","kind":"size","state":"open","created":1800032520000,"updated":1800032520000,"reason":null,"via":"staff","history":[["open",1800032520000]],"session":"s-1","gtin":"09506000134369","instead_of":"09506000134352","where":"stockroom"},"device":"room-1"}');
INSERT INTO "stream" VALUES(10,'fitting','{"type":"fitting.request","room":"room-1","at":1800032520000,"request":{"id":"r-2","room":"room-1","kind":"size","state":"acknowledged","created":1800032520000,"updated":1800032520000,"reason":null,"via":"staff","history":[["open",1800032520000],["acknowledged",1800032520000]],"session":"s-1","gtin":"09506000134369","instead_of":"09506000134352","where":"stockroom","by":"ana"},"device":"room-1"}');
INSERT INTO "stream" VALUES(11,'event','{"id":5,"device":"room-1","epoch":"e1","seq":5,"type":"garment.out","t_device":1800033120000,"t_gateway":1800033120000,"body":{"uid":"04000"}}');
INSERT INTO "stream" VALUES(12,'event','{"id":6,"device":"room-1","epoch":"e1","seq":6,"type":"room.free","t_device":1800033120000,"t_gateway":1800033120000,"body":{}}');
INSERT INTO "stream" VALUES(13,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800033120000,"session":"s-1","key":"09506000134352/SN000","uid":"04000","gtin":"09506000134352","serial":"SN000","device":"room-1"}');
INSERT INTO "stream" VALUES(14,'fitting','{"type":"fitting.request","room":"room-1","at":1800033120000,"request":{"id":"r-2","room":"room-1","kind":"size","state":"cancelled","created":1800032520000,"updated":1800033120000,"reason":"room-free","via":"staff","history":[["open",1800032520000],["acknowledged",1800032520000],["cancelled",1800033120000]],"session":"s-1","gtin":"09506000134369","instead_of":"09506000134352","where":"stockroom","by":"ana"},"device":"room-1"}');
INSERT INTO "stream" VALUES(15,'fitting','{"type":"fitting.session.closed","room":"room-1","at":1800033120000,"session":"s-1","tried":["09506000134352"],"duration_ms":720000,"device":"room-1"}');
INSERT INTO "stream" VALUES(16,'event','{"id":7,"device":"room-2","epoch":"e1","seq":1,"type":"room.occupied","t_device":1800034800000,"t_gateway":1800034800000,"body":{}}');
INSERT INTO "stream" VALUES(17,'event','{"id":8,"device":"room-2","epoch":"e1","seq":2,"type":"garment.in","t_device":1800034860000,"t_gateway":1800034860000,"body":{"uid":"04010","tech":"ntag213","gtin":"09506000134369","serial":"SN010"}}');
INSERT INTO "stream" VALUES(18,'event','{"id":9,"device":"room-2","epoch":"e1","seq":3,"type":"garment.in","t_device":1800034920000,"t_gateway":1800034920000,"body":{"uid":"04011","tech":"ntag213","gtin":"09506000134376","serial":"SN011"}}');
INSERT INTO "stream" VALUES(19,'fitting','{"type":"fitting.session.started","room":"room-2","at":1800034800000,"session":"s-3","why":"occupied","device":"room-2"}');
INSERT INTO "stream" VALUES(20,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800034860000,"session":"s-3","key":"09506000134369/SN010","uid":"04010","gtin":"09506000134369","serial":"SN010","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(21,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800034920000,"session":"s-3","key":"09506000134376/SN011","uid":"04011","gtin":"09506000134376","serial":"SN011","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(22,'event','{"id":10,"device":"room-2","epoch":"e1","seq":4,"type":"call.pressed","t_device":1800034920000,"t_gateway":1800034920000,"body":{}}');
INSERT INTO "stream" VALUES(23,'fitting','{"type":"fitting.request","room":"room-2","at":1800034920000,"request":{"id":"r-4","room":"room-2","kind":"call","state":"open","created":1800034920000,"updated":1800034920000,"reason":null,"via":"staff","history":[["open",1800034920000]],"session":"s-3","source":"button","garments":[{"key":"09506000134369/SN010","gtin":"09506000134369","serial":"SN010","uid":"04010"},{"key":"09506000134376/SN011","gtin":"09506000134376","serial":"SN011","uid":"04011"}]},"device":"room-2"}');
INSERT INTO "stream" VALUES(24,'fitting','{"type":"fitting.request","room":"room-2","at":1800034920000,"request":{"id":"r-4","room":"room-2","kind":"call","state":"acknowledged","created":1800034920000,"updated":1800034920000,"reason":null,"via":"staff","history":[["open",1800034920000],["acknowledged",1800034920000]],"session":"s-3","source":"button","garments":[{"key":"09506000134369/SN010","gtin":"09506000134369","serial":"SN010","uid":"04010"},{"key":"09506000134376/SN011","gtin":"09506000134376","serial":"SN011","uid":"04011"}],"by":"ben"},"device":"room-2"}');
INSERT INTO "stream" VALUES(25,'command','{"id":"c-cc6809a26b1e5485","device":"room-2","name":"call_ack","args":{},"idem_key":"fr:r-4:call_ack","status":"queued","reason":null,"result":null,"deadline":1800035520000,"created":1800034920000,"updated":1800034920000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(26,'fitting','{"type":"fitting.request","room":"room-2","at":1800034920000,"request":{"id":"r-4","room":"room-2","kind":"call","state":"done","created":1800034920000,"updated":1800034920000,"reason":null,"via":"staff","history":[["open",1800034920000],["acknowledged",1800034920000],["done",1800034920000]],"session":"s-3","source":"button","garments":[{"key":"09506000134369/SN010","gtin":"09506000134369","serial":"SN010","uid":"04010"},{"key":"09506000134376/SN011","gtin":"09506000134376","serial":"SN011","uid":"04011"}],"by":"ben"},"device":"room-2"}');
INSERT INTO "stream" VALUES(27,'event','{"id":11,"device":"room-2","epoch":"e1","seq":5,"type":"garment.out","t_device":1800035520000,"t_gateway":1800035520000,"body":{"uid":"04010"}}');
INSERT INTO "stream" VALUES(28,'event','{"id":12,"device":"room-2","epoch":"e1","seq":6,"type":"garment.out","t_device":1800035520000,"t_gateway":1800035520000,"body":{"uid":"04011"}}');
INSERT INTO "stream" VALUES(29,'event','{"id":13,"device":"room-2","epoch":"e1","seq":7,"type":"room.free","t_device":1800035520000,"t_gateway":1800035520000,"body":{}}');
INSERT INTO "stream" VALUES(30,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800035520000,"session":"s-3","key":"09506000134369/SN010","uid":"04010","gtin":"09506000134369","serial":"SN010","device":"room-2"}');
INSERT INTO "stream" VALUES(31,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800035520000,"session":"s-3","key":"09506000134376/SN011","uid":"04011","gtin":"09506000134376","serial":"SN011","device":"room-2"}');
INSERT INTO "stream" VALUES(32,'fitting','{"type":"fitting.session.closed","room":"room-2","at":1800035520000,"session":"s-3","tried":["09506000134369","09506000134376"],"duration_ms":720000,"device":"room-2"}');
INSERT INTO "stream" VALUES(33,'event','{"id":14,"device":"room-1","epoch":"e1","seq":7,"type":"room.occupied","t_device":1800037200000,"t_gateway":1800037200000,"body":{}}');
INSERT INTO "stream" VALUES(34,'event','{"id":15,"device":"room-1","epoch":"e1","seq":8,"type":"garment.in","t_device":1800037260000,"t_gateway":1800037260000,"body":{"uid":"04020","tech":"ntag213","gtin":"09506000134376","serial":"SN020"}}');
INSERT INTO "stream" VALUES(35,'event','{"id":16,"device":"room-1","epoch":"e1","seq":9,"type":"garment.in","t_device":1800037320000,"t_gateway":1800037320000,"body":{"uid":"04021","tech":"ntag213","gtin":"09506000134383","serial":"SN021"}}');
INSERT INTO "stream" VALUES(36,'event','{"id":17,"device":"room-1","epoch":"e1","seq":10,"type":"garment.in","t_device":1800037380000,"t_gateway":1800037380000,"body":{"uid":"04022","tech":"ntag213","gtin":"09506000134352","serial":"SN022"}}');
INSERT INTO "stream" VALUES(37,'fitting','{"type":"fitting.session.started","room":"room-1","at":1800037200000,"session":"s-5","why":"occupied","device":"room-1"}');
INSERT INTO "stream" VALUES(38,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800037260000,"session":"s-5","key":"09506000134376/SN020","uid":"04020","gtin":"09506000134376","serial":"SN020","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(39,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800037320000,"session":"s-5","key":"09506000134383/SN021","uid":"04021","gtin":"09506000134383","serial":"SN021","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(40,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800037380000,"session":"s-5","key":"09506000134352/SN022","uid":"04022","gtin":"09506000134352","serial":"SN022","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(41,'event','{"id":18,"device":"room-1","epoch":"e1","seq":11,"type":"garment.out","t_device":1800037980000,"t_gateway":1800037980000,"body":{"uid":"04020"}}');
INSERT INTO "stream" VALUES(42,'event','{"id":19,"device":"room-1","epoch":"e1","seq":12,"type":"garment.out","t_device":1800037980000,"t_gateway":1800037980000,"body":{"uid":"04021"}}');
INSERT INTO "stream" VALUES(43,'event','{"id":20,"device":"room-1","epoch":"e1","seq":13,"type":"garment.out","t_device":1800037980000,"t_gateway":1800037980000,"body":{"uid":"04022"}}');
INSERT INTO "stream" VALUES(44,'event','{"id":21,"device":"room-1","epoch":"e1","seq":14,"type":"room.free","t_device":1800037980000,"t_gateway":1800037980000,"body":{}}');
INSERT INTO "stream" VALUES(45,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800037980000,"session":"s-5","key":"09506000134376/SN020","uid":"04020","gtin":"09506000134376","serial":"SN020","device":"room-1"}');
INSERT INTO "stream" VALUES(46,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800037980000,"session":"s-5","key":"09506000134383/SN021","uid":"04021","gtin":"09506000134383","serial":"SN021","device":"room-1"}');
INSERT INTO "stream" VALUES(47,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800037980000,"session":"s-5","key":"09506000134352/SN022","uid":"04022","gtin":"09506000134352","serial":"SN022","device":"room-1"}');
INSERT INTO "stream" VALUES(48,'fitting','{"type":"fitting.session.closed","room":"room-1","at":1800037980000,"session":"s-5","tried":["09506000134352","09506000134376","09506000134383"],"duration_ms":780000,"device":"room-1"}');
INSERT INTO "stream" VALUES(49,'event','{"id":22,"device":"room-2","epoch":"e1","seq":8,"type":"room.occupied","t_device":1800039600000,"t_gateway":1800039600000,"body":{}}');
INSERT INTO "stream" VALUES(50,'event','{"id":23,"device":"room-2","epoch":"e1","seq":9,"type":"garment.in","t_device":1800039660000,"t_gateway":1800039660000,"body":{"uid":"04030","tech":"ntag213","gtin":"09506000134383","serial":"SN030"}}');
INSERT INTO "stream" VALUES(51,'fitting','{"type":"fitting.session.started","room":"room-2","at":1800039600000,"session":"s-6","why":"occupied","device":"room-2"}');
INSERT INTO "stream" VALUES(52,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800039660000,"session":"s-6","key":"09506000134383/SN030","uid":"04030","gtin":"09506000134383","serial":"SN030","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(53,'event','{"id":24,"device":"room-2","epoch":"e1","seq":10,"type":"garment.out","t_device":1800039720000,"t_gateway":1800039720000,"body":{"uid":"04030"}}');
INSERT INTO "stream" VALUES(54,'event','{"id":25,"device":"room-2","epoch":"e1","seq":11,"type":"garment.in","t_device":1800039720000,"t_gateway":1800039720000,"body":{"uid":"04030","tech":"ntag213","gtin":"09506000134383","serial":"SN030"}}');
INSERT INTO "stream" VALUES(55,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800039720000,"session":"s-6","key":"09506000134383/SN030","uid":"04030","gtin":"09506000134383","serial":"SN030","device":"room-2"}');
INSERT INTO "stream" VALUES(56,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800039720000,"session":"s-6","key":"09506000134383/SN030","uid":"04030","gtin":"09506000134383","serial":"SN030","swap":true,"device":"room-2"}');
INSERT INTO "stream" VALUES(57,'fitting','{"type":"fitting.request","room":"room-2","at":1800039720000,"request":{"id":"r-7","room":"room-2","kind":"size","state":"open","created":1800039720000,"updated":1800039720000,"reason":null,"via":"staff","history":[["open",1800039720000]],"session":"s-6","gtin":"09506000134369","instead_of":"09506000134383","where":"stockroom"},"device":"room-2"}');
INSERT INTO "stream" VALUES(58,'event','{"id":26,"device":"room-2","epoch":"e1","seq":12,"type":"garment.out","t_device":1800040320000,"t_gateway":1800040320000,"body":{"uid":"04030"}}');
INSERT INTO "stream" VALUES(59,'event','{"id":27,"device":"room-2","epoch":"e1","seq":13,"type":"room.free","t_device":1800040320000,"t_gateway":1800040320000,"body":{}}');
INSERT INTO "stream" VALUES(60,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800040320000,"session":"s-6","key":"09506000134383/SN030","uid":"04030","gtin":"09506000134383","serial":"SN030","device":"room-2"}');
INSERT INTO "stream" VALUES(61,'fitting','{"type":"fitting.request","room":"room-2","at":1800040320000,"request":{"id":"r-7","room":"room-2","kind":"size","state":"cancelled","created":1800039720000,"updated":1800040320000,"reason":"room-free","via":"staff","history":[["open",1800039720000],["cancelled",1800040320000]],"session":"s-6","gtin":"09506000134369","instead_of":"09506000134383","where":"stockroom"},"device":"room-2"}');
INSERT INTO "stream" VALUES(62,'fitting','{"type":"fitting.session.closed","room":"room-2","at":1800040320000,"session":"s-6","tried":["09506000134383"],"duration_ms":720000,"device":"room-2"}');
INSERT INTO "stream" VALUES(63,'event','{"id":28,"device":"room-1","epoch":"e1","seq":15,"type":"room.occupied","t_device":1800042000000,"t_gateway":1800042000000,"body":{}}');
INSERT INTO "stream" VALUES(64,'event','{"id":29,"device":"room-1","epoch":"e1","seq":16,"type":"garment.in","t_device":1800042060000,"t_gateway":1800042060000,"body":{"uid":"04040","tech":"ntag213","gtin":"09506000134352","serial":"SN040"}}');
INSERT INTO "stream" VALUES(65,'event','{"id":30,"device":"room-1","epoch":"e1","seq":17,"type":"garment.in","t_device":1800042120000,"t_gateway":1800042120000,"body":{"uid":"04041","tech":"ntag213","gtin":"09506000134369","serial":"SN041"}}');
INSERT INTO "stream" VALUES(66,'fitting','{"type":"fitting.session.started","room":"room-1","at":1800042000000,"session":"s-8","why":"occupied","device":"room-1"}');
INSERT INTO "stream" VALUES(67,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800042060000,"session":"s-8","key":"09506000134352/SN040","uid":"04040","gtin":"09506000134352","serial":"SN040","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(68,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800042120000,"session":"s-8","key":"09506000134369/SN041","uid":"04041","gtin":"09506000134369","serial":"SN041","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(69,'event','{"id":31,"device":"room-1","epoch":"e1","seq":18,"type":"garment.out","t_device":1800042720000,"t_gateway":1800042720000,"body":{"uid":"04040"}}');
INSERT INTO "stream" VALUES(70,'event','{"id":32,"device":"room-1","epoch":"e1","seq":19,"type":"garment.out","t_device":1800042720000,"t_gateway":1800042720000,"body":{"uid":"04041"}}');
INSERT INTO "stream" VALUES(71,'event','{"id":33,"device":"room-1","epoch":"e1","seq":20,"type":"room.free","t_device":1800042720000,"t_gateway":1800042720000,"body":{}}');
INSERT INTO "stream" VALUES(72,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800042720000,"session":"s-8","key":"09506000134352/SN040","uid":"04040","gtin":"09506000134352","serial":"SN040","device":"room-1"}');
INSERT INTO "stream" VALUES(73,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800042720000,"session":"s-8","key":"09506000134369/SN041","uid":"04041","gtin":"09506000134369","serial":"SN041","device":"room-1"}');
INSERT INTO "stream" VALUES(74,'fitting','{"type":"fitting.session.closed","room":"room-1","at":1800042720000,"session":"s-8","tried":["09506000134352","09506000134369"],"duration_ms":720000,"device":"room-1"}');
INSERT INTO "stream" VALUES(75,'event','{"id":34,"device":"room-2","epoch":"e1","seq":14,"type":"room.occupied","t_device":1800044400000,"t_gateway":1800044400000,"body":{}}');
INSERT INTO "stream" VALUES(76,'event','{"id":35,"device":"room-2","epoch":"e1","seq":15,"type":"garment.in","t_device":1800044460000,"t_gateway":1800044460000,"body":{"uid":"04050","tech":"ntag213","gtin":"09506000134369","serial":"SN050"}}');
INSERT INTO "stream" VALUES(77,'event','{"id":36,"device":"room-2","epoch":"e1","seq":16,"type":"garment.in","t_device":1800044520000,"t_gateway":1800044520000,"body":{"uid":"04051","tech":"ntag213","gtin":"09506000134376","serial":"SN051"}}');
INSERT INTO "stream" VALUES(78,'event','{"id":37,"device":"room-2","epoch":"e1","seq":17,"type":"garment.in","t_device":1800044580000,"t_gateway":1800044580000,"body":{"uid":"04052","tech":"ntag213","gtin":"09506000134383","serial":"SN052"}}');
INSERT INTO "stream" VALUES(79,'fitting','{"type":"fitting.session.started","room":"room-2","at":1800044400000,"session":"s-9","why":"occupied","device":"room-2"}');
INSERT INTO "stream" VALUES(80,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800044460000,"session":"s-9","key":"09506000134369/SN050","uid":"04050","gtin":"09506000134369","serial":"SN050","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(81,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800044520000,"session":"s-9","key":"09506000134376/SN051","uid":"04051","gtin":"09506000134376","serial":"SN051","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(82,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800044580000,"session":"s-9","key":"09506000134383/SN052","uid":"04052","gtin":"09506000134383","serial":"SN052","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(83,'event','{"id":38,"device":"room-2","epoch":"e1","seq":18,"type":"call.pressed","t_device":1800044580000,"t_gateway":1800044580000,"body":{}}');
INSERT INTO "stream" VALUES(84,'fitting','{"type":"fitting.request","room":"room-2","at":1800044580000,"request":{"id":"r-10","room":"room-2","kind":"call","state":"open","created":1800044580000,"updated":1800044580000,"reason":null,"via":"staff","history":[["open",1800044580000]],"session":"s-9","source":"button","garments":[{"key":"09506000134369/SN050","gtin":"09506000134369","serial":"SN050","uid":"04050"},{"key":"09506000134376/SN051","gtin":"09506000134376","serial":"SN051","uid":"04051"},{"key":"09506000134383/SN052","gtin":"09506000134383","serial":"SN052","uid":"04052"}]},"device":"room-2"}');
INSERT INTO "stream" VALUES(85,'fitting','{"type":"fitting.request","room":"room-2","at":1800044580000,"request":{"id":"r-10","room":"room-2","kind":"call","state":"acknowledged","created":1800044580000,"updated":1800044580000,"reason":null,"via":"staff","history":[["open",1800044580000],["acknowledged",1800044580000]],"session":"s-9","source":"button","garments":[{"key":"09506000134369/SN050","gtin":"09506000134369","serial":"SN050","uid":"04050"},{"key":"09506000134376/SN051","gtin":"09506000134376","serial":"SN051","uid":"04051"},{"key":"09506000134383/SN052","gtin":"09506000134383","serial":"SN052","uid":"04052"}],"by":"ben"},"device":"room-2"}');
INSERT INTO "stream" VALUES(86,'command','{"id":"c-7c66d2c65e60b8a9","device":"room-2","name":"call_ack","args":{},"idem_key":"fr:r-10:call_ack","status":"queued","reason":null,"result":null,"deadline":1800045180000,"created":1800044580000,"updated":1800044580000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(87,'fitting','{"type":"fitting.request","room":"room-2","at":1800044580000,"request":{"id":"r-10","room":"room-2","kind":"call","state":"done","created":1800044580000,"updated":1800044580000,"reason":null,"via":"staff","history":[["open",1800044580000],["acknowledged",1800044580000],["done",1800044580000]],"session":"s-9","source":"button","garments":[{"key":"09506000134369/SN050","gtin":"09506000134369","serial":"SN050","uid":"04050"},{"key":"09506000134376/SN051","gtin":"09506000134376","serial":"SN051","uid":"04051"},{"key":"09506000134383/SN052","gtin":"09506000134383","serial":"SN052","uid":"04052"}],"by":"ben"},"device":"room-2"}');
INSERT INTO "stream" VALUES(88,'event','{"id":39,"device":"room-2","epoch":"e1","seq":19,"type":"garment.out","t_device":1800045180000,"t_gateway":1800045180000,"body":{"uid":"04050"}}');
INSERT INTO "stream" VALUES(89,'event','{"id":40,"device":"room-2","epoch":"e1","seq":20,"type":"garment.out","t_device":1800045180000,"t_gateway":1800045180000,"body":{"uid":"04051"}}');
INSERT INTO "stream" VALUES(90,'event','{"id":41,"device":"room-2","epoch":"e1","seq":21,"type":"garment.out","t_device":1800045180000,"t_gateway":1800045180000,"body":{"uid":"04052"}}');
INSERT INTO "stream" VALUES(91,'event','{"id":42,"device":"room-2","epoch":"e1","seq":22,"type":"room.free","t_device":1800045180000,"t_gateway":1800045180000,"body":{}}');
INSERT INTO "stream" VALUES(92,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800045180000,"session":"s-9","key":"09506000134369/SN050","uid":"04050","gtin":"09506000134369","serial":"SN050","device":"room-2"}');
INSERT INTO "stream" VALUES(93,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800045180000,"session":"s-9","key":"09506000134376/SN051","uid":"04051","gtin":"09506000134376","serial":"SN051","device":"room-2"}');
INSERT INTO "stream" VALUES(94,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800045180000,"session":"s-9","key":"09506000134383/SN052","uid":"04052","gtin":"09506000134383","serial":"SN052","device":"room-2"}');
INSERT INTO "stream" VALUES(95,'fitting','{"type":"fitting.session.closed","room":"room-2","at":1800045180000,"session":"s-9","tried":["09506000134369","09506000134376","09506000134383"],"duration_ms":780000,"device":"room-2"}');
INSERT INTO "stream" VALUES(96,'event','{"id":43,"device":"room-1","epoch":"e1","seq":21,"type":"room.occupied","t_device":1800118800000,"t_gateway":1800118800000,"body":{}}');
INSERT INTO "stream" VALUES(97,'event','{"id":44,"device":"room-1","epoch":"e1","seq":22,"type":"garment.in","t_device":1800118860000,"t_gateway":1800118860000,"body":{"uid":"04100","tech":"ntag213","gtin":"09506000134369","serial":"SN100"}}');
INSERT INTO "stream" VALUES(98,'fitting','{"type":"fitting.session.started","room":"room-1","at":1800118800000,"session":"s-11","why":"occupied","device":"room-1"}');
INSERT INTO "stream" VALUES(99,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800118860000,"session":"s-11","key":"09506000134369/SN100","uid":"04100","gtin":"09506000134369","serial":"SN100","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(100,'event','{"id":45,"device":"room-1","epoch":"e1","seq":23,"type":"garment.out","t_device":1800118920000,"t_gateway":1800118920000,"body":{"uid":"04100"}}');
INSERT INTO "stream" VALUES(101,'event','{"id":46,"device":"room-1","epoch":"e1","seq":24,"type":"garment.in","t_device":1800118920000,"t_gateway":1800118920000,"body":{"uid":"04100","tech":"ntag213","gtin":"09506000134369","serial":"SN100"}}');
INSERT INTO "stream" VALUES(102,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800118920000,"session":"s-11","key":"09506000134369/SN100","uid":"04100","gtin":"09506000134369","serial":"SN100","device":"room-1"}');
INSERT INTO "stream" VALUES(103,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800118920000,"session":"s-11","key":"09506000134369/SN100","uid":"04100","gtin":"09506000134369","serial":"SN100","swap":true,"device":"room-1"}');
INSERT INTO "stream" VALUES(104,'fitting','{"type":"fitting.request","room":"room-1","at":1800118920000,"request":{"id":"r-12","room":"room-1","kind":"size","state":"open","created":1800118920000,"updated":1800118920000,"reason":null,"via":"staff","history":[["open",1800118920000]],"session":"s-11","gtin":"09506000134352","instead_of":"09506000134369","where":"floor"},"device":"room-1"}');
INSERT INTO "stream" VALUES(105,'fitting','{"type":"fitting.request","room":"room-1","at":1800118920000,"request":{"id":"r-12","room":"room-1","kind":"size","state":"acknowledged","created":1800118920000,"updated":1800118920000,"reason":null,"via":"staff","history":[["open",1800118920000],["acknowledged",1800118920000]],"session":"s-11","gtin":"09506000134352","instead_of":"09506000134369","where":"floor","by":"ana"},"device":"room-1"}');
INSERT INTO "stream" VALUES(106,'event','{"id":47,"device":"room-1","epoch":"e1","seq":25,"type":"garment.out","t_device":1800119520000,"t_gateway":1800119520000,"body":{"uid":"04100"}}');
INSERT INTO "stream" VALUES(107,'event','{"id":48,"device":"room-1","epoch":"e1","seq":26,"type":"room.free","t_device":1800119520000,"t_gateway":1800119520000,"body":{}}');
INSERT INTO "stream" VALUES(108,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800119520000,"session":"s-11","key":"09506000134369/SN100","uid":"04100","gtin":"09506000134369","serial":"SN100","device":"room-1"}');
INSERT INTO "stream" VALUES(109,'fitting','{"type":"fitting.request","room":"room-1","at":1800119520000,"request":{"id":"r-12","room":"room-1","kind":"size","state":"cancelled","created":1800118920000,"updated":1800119520000,"reason":"room-free","via":"staff","history":[["open",1800118920000],["acknowledged",1800118920000],["cancelled",1800119520000]],"session":"s-11","gtin":"09506000134352","instead_of":"09506000134369","where":"floor","by":"ana"},"device":"room-1"}');
INSERT INTO "stream" VALUES(110,'fitting','{"type":"fitting.session.closed","room":"room-1","at":1800119520000,"session":"s-11","tried":["09506000134369"],"duration_ms":720000,"device":"room-1"}');
INSERT INTO "stream" VALUES(111,'event','{"id":49,"device":"room-2","epoch":"e1","seq":23,"type":"room.occupied","t_device":1800121200000,"t_gateway":1800121200000,"body":{}}');
INSERT INTO "stream" VALUES(112,'event','{"id":50,"device":"room-2","epoch":"e1","seq":24,"type":"garment.in","t_device":1800121260000,"t_gateway":1800121260000,"body":{"uid":"04110","tech":"ntag213","gtin":"09506000134376","serial":"SN110"}}');
INSERT INTO "stream" VALUES(113,'event','{"id":51,"device":"room-2","epoch":"e1","seq":25,"type":"garment.in","t_device":1800121320000,"t_gateway":1800121320000,"body":{"uid":"04111","tech":"ntag213","gtin":"09506000134383","serial":"SN111"}}');
INSERT INTO "stream" VALUES(114,'fitting','{"type":"fitting.session.started","room":"room-2","at":1800121200000,"session":"s-13","why":"occupied","device":"room-2"}');
INSERT INTO "stream" VALUES(115,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800121260000,"session":"s-13","key":"09506000134376/SN110","uid":"04110","gtin":"09506000134376","serial":"SN110","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(116,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800121320000,"session":"s-13","key":"09506000134383/SN111","uid":"04111","gtin":"09506000134383","serial":"SN111","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(117,'event','{"id":52,"device":"room-2","epoch":"e1","seq":26,"type":"call.pressed","t_device":1800121320000,"t_gateway":1800121320000,"body":{}}');
INSERT INTO "stream" VALUES(118,'fitting','{"type":"fitting.request","room":"room-2","at":1800121320000,"request":{"id":"r-14","room":"room-2","kind":"call","state":"open","created":1800121320000,"updated":1800121320000,"reason":null,"via":"staff","history":[["open",1800121320000]],"session":"s-13","source":"button","garments":[{"key":"09506000134376/SN110","gtin":"09506000134376","serial":"SN110","uid":"04110"},{"key":"09506000134383/SN111","gtin":"09506000134383","serial":"SN111","uid":"04111"}]},"device":"room-2"}');
INSERT INTO "stream" VALUES(119,'fitting','{"type":"fitting.request","room":"room-2","at":1800121320000,"request":{"id":"r-14","room":"room-2","kind":"call","state":"acknowledged","created":1800121320000,"updated":1800121320000,"reason":null,"via":"staff","history":[["open",1800121320000],["acknowledged",1800121320000]],"session":"s-13","source":"button","garments":[{"key":"09506000134376/SN110","gtin":"09506000134376","serial":"SN110","uid":"04110"},{"key":"09506000134383/SN111","gtin":"09506000134383","serial":"SN111","uid":"04111"}],"by":"ben"},"device":"room-2"}');
INSERT INTO "stream" VALUES(120,'command','{"id":"c-7837ba60862a9518","device":"room-2","name":"call_ack","args":{},"idem_key":"fr:r-14:call_ack","status":"queued","reason":null,"result":null,"deadline":1800121920000,"created":1800121320000,"updated":1800121320000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(121,'fitting','{"type":"fitting.request","room":"room-2","at":1800121320000,"request":{"id":"r-14","room":"room-2","kind":"call","state":"done","created":1800121320000,"updated":1800121320000,"reason":null,"via":"staff","history":[["open",1800121320000],["acknowledged",1800121320000],["done",1800121320000]],"session":"s-13","source":"button","garments":[{"key":"09506000134376/SN110","gtin":"09506000134376","serial":"SN110","uid":"04110"},{"key":"09506000134383/SN111","gtin":"09506000134383","serial":"SN111","uid":"04111"}],"by":"ben"},"device":"room-2"}');
INSERT INTO "stream" VALUES(122,'event','{"id":53,"device":"room-2","epoch":"e1","seq":27,"type":"garment.out","t_device":1800121920000,"t_gateway":1800121920000,"body":{"uid":"04110"}}');
INSERT INTO "stream" VALUES(123,'event','{"id":54,"device":"room-2","epoch":"e1","seq":28,"type":"garment.out","t_device":1800121920000,"t_gateway":1800121920000,"body":{"uid":"04111"}}');
INSERT INTO "stream" VALUES(124,'event','{"id":55,"device":"room-2","epoch":"e1","seq":29,"type":"room.free","t_device":1800121920000,"t_gateway":1800121920000,"body":{}}');
INSERT INTO "stream" VALUES(125,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800121920000,"session":"s-13","key":"09506000134376/SN110","uid":"04110","gtin":"09506000134376","serial":"SN110","device":"room-2"}');
INSERT INTO "stream" VALUES(126,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800121920000,"session":"s-13","key":"09506000134383/SN111","uid":"04111","gtin":"09506000134383","serial":"SN111","device":"room-2"}');
INSERT INTO "stream" VALUES(127,'fitting','{"type":"fitting.session.closed","room":"room-2","at":1800121920000,"session":"s-13","tried":["09506000134376","09506000134383"],"duration_ms":720000,"device":"room-2"}');
INSERT INTO "stream" VALUES(128,'event','{"id":56,"device":"room-1","epoch":"e1","seq":27,"type":"room.occupied","t_device":1800123600000,"t_gateway":1800123600000,"body":{}}');
INSERT INTO "stream" VALUES(129,'event','{"id":57,"device":"room-1","epoch":"e1","seq":28,"type":"garment.in","t_device":1800123660000,"t_gateway":1800123660000,"body":{"uid":"04120","tech":"ntag213","gtin":"09506000134383","serial":"SN120"}}');
INSERT INTO "stream" VALUES(130,'event','{"id":58,"device":"room-1","epoch":"e1","seq":29,"type":"garment.in","t_device":1800123720000,"t_gateway":1800123720000,"body":{"uid":"04121","tech":"ntag213","gtin":"09506000134352","serial":"SN121"}}');
INSERT INTO "stream" VALUES(131,'event','{"id":59,"device":"room-1","epoch":"e1","seq":30,"type":"garment.in","t_device":1800123780000,"t_gateway":1800123780000,"body":{"uid":"04122","tech":"ntag213","gtin":"09506000134369","serial":"SN122"}}');
INSERT INTO "stream" VALUES(132,'fitting','{"type":"fitting.session.started","room":"room-1","at":1800123600000,"session":"s-15","why":"occupied","device":"room-1"}');
INSERT INTO "stream" VALUES(133,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800123660000,"session":"s-15","key":"09506000134383/SN120","uid":"04120","gtin":"09506000134383","serial":"SN120","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(134,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800123720000,"session":"s-15","key":"09506000134352/SN121","uid":"04121","gtin":"09506000134352","serial":"SN121","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(135,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800123780000,"session":"s-15","key":"09506000134369/SN122","uid":"04122","gtin":"09506000134369","serial":"SN122","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(136,'event','{"id":60,"device":"room-1","epoch":"e1","seq":31,"type":"garment.out","t_device":1800124380000,"t_gateway":1800124380000,"body":{"uid":"04120"}}');
INSERT INTO "stream" VALUES(137,'event','{"id":61,"device":"room-1","epoch":"e1","seq":32,"type":"garment.out","t_device":1800124380000,"t_gateway":1800124380000,"body":{"uid":"04121"}}');
INSERT INTO "stream" VALUES(138,'event','{"id":62,"device":"room-1","epoch":"e1","seq":33,"type":"garment.out","t_device":1800124380000,"t_gateway":1800124380000,"body":{"uid":"04122"}}');
INSERT INTO "stream" VALUES(139,'event','{"id":63,"device":"room-1","epoch":"e1","seq":34,"type":"room.free","t_device":1800124380000,"t_gateway":1800124380000,"body":{}}');
INSERT INTO "stream" VALUES(140,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800124380000,"session":"s-15","key":"09506000134383/SN120","uid":"04120","gtin":"09506000134383","serial":"SN120","device":"room-1"}');
INSERT INTO "stream" VALUES(141,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800124380000,"session":"s-15","key":"09506000134352/SN121","uid":"04121","gtin":"09506000134352","serial":"SN121","device":"room-1"}');
INSERT INTO "stream" VALUES(142,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800124380000,"session":"s-15","key":"09506000134369/SN122","uid":"04122","gtin":"09506000134369","serial":"SN122","device":"room-1"}');
INSERT INTO "stream" VALUES(143,'fitting','{"type":"fitting.session.closed","room":"room-1","at":1800124380000,"session":"s-15","tried":["09506000134352","09506000134369","09506000134383"],"duration_ms":780000,"device":"room-1"}');
INSERT INTO "stream" VALUES(144,'event','{"id":64,"device":"room-2","epoch":"e1","seq":30,"type":"room.occupied","t_device":1800126000000,"t_gateway":1800126000000,"body":{}}');
INSERT INTO "stream" VALUES(145,'event','{"id":65,"device":"room-2","epoch":"e1","seq":31,"type":"garment.in","t_device":1800126060000,"t_gateway":1800126060000,"body":{"uid":"04130","tech":"ntag213","gtin":"09506000134352","serial":"SN130"}}');
INSERT INTO "stream" VALUES(146,'fitting','{"type":"fitting.session.started","room":"room-2","at":1800126000000,"session":"s-16","why":"occupied","device":"room-2"}');
INSERT INTO "stream" VALUES(147,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800126060000,"session":"s-16","key":"09506000134352/SN130","uid":"04130","gtin":"09506000134352","serial":"SN130","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(148,'event','{"id":66,"device":"room-2","epoch":"e1","seq":32,"type":"garment.out","t_device":1800126120000,"t_gateway":1800126120000,"body":{"uid":"04130"}}');
INSERT INTO "stream" VALUES(149,'event','{"id":67,"device":"room-2","epoch":"e1","seq":33,"type":"garment.in","t_device":1800126120000,"t_gateway":1800126120000,"body":{"uid":"04130","tech":"ntag213","gtin":"09506000134352","serial":"SN130"}}');
INSERT INTO "stream" VALUES(150,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800126120000,"session":"s-16","key":"09506000134352/SN130","uid":"04130","gtin":"09506000134352","serial":"SN130","device":"room-2"}');
INSERT INTO "stream" VALUES(151,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800126120000,"session":"s-16","key":"09506000134352/SN130","uid":"04130","gtin":"09506000134352","serial":"SN130","swap":true,"device":"room-2"}');
INSERT INTO "stream" VALUES(152,'fitting','{"type":"fitting.request","room":"room-2","at":1800126120000,"request":{"id":"r-17","room":"room-2","kind":"size","state":"open","created":1800126120000,"updated":1800126120000,"reason":null,"via":"staff","history":[["open",1800126120000]],"session":"s-16","gtin":"09506000134369","instead_of":"09506000134352","where":"stockroom"},"device":"room-2"}');
INSERT INTO "stream" VALUES(153,'event','{"id":68,"device":"room-2","epoch":"e1","seq":34,"type":"garment.out","t_device":1800126720000,"t_gateway":1800126720000,"body":{"uid":"04130"}}');
INSERT INTO "stream" VALUES(154,'event','{"id":69,"device":"room-2","epoch":"e1","seq":35,"type":"room.free","t_device":1800126720000,"t_gateway":1800126720000,"body":{}}');
INSERT INTO "stream" VALUES(155,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800126720000,"session":"s-16","key":"09506000134352/SN130","uid":"04130","gtin":"09506000134352","serial":"SN130","device":"room-2"}');
INSERT INTO "stream" VALUES(156,'fitting','{"type":"fitting.request","room":"room-2","at":1800126720000,"request":{"id":"r-17","room":"room-2","kind":"size","state":"cancelled","created":1800126120000,"updated":1800126720000,"reason":"room-free","via":"staff","history":[["open",1800126120000],["cancelled",1800126720000]],"session":"s-16","gtin":"09506000134369","instead_of":"09506000134352","where":"stockroom"},"device":"room-2"}');
INSERT INTO "stream" VALUES(157,'fitting','{"type":"fitting.session.closed","room":"room-2","at":1800126720000,"session":"s-16","tried":["09506000134352"],"duration_ms":720000,"device":"room-2"}');
INSERT INTO "stream" VALUES(158,'event','{"id":70,"device":"room-1","epoch":"e1","seq":35,"type":"room.occupied","t_device":1800128400000,"t_gateway":1800128400000,"body":{}}');
INSERT INTO "stream" VALUES(159,'event','{"id":71,"device":"room-1","epoch":"e1","seq":36,"type":"garment.in","t_device":1800128460000,"t_gateway":1800128460000,"body":{"uid":"04140","tech":"ntag213","gtin":"09506000134369","serial":"SN140"}}');
INSERT INTO "stream" VALUES(160,'event','{"id":72,"device":"room-1","epoch":"e1","seq":37,"type":"garment.in","t_device":1800128520000,"t_gateway":1800128520000,"body":{"uid":"04141","tech":"ntag213","gtin":"09506000134376","serial":"SN141"}}');
INSERT INTO "stream" VALUES(161,'fitting','{"type":"fitting.session.started","room":"room-1","at":1800128400000,"session":"s-18","why":"occupied","device":"room-1"}');
INSERT INTO "stream" VALUES(162,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800128460000,"session":"s-18","key":"09506000134369/SN140","uid":"04140","gtin":"09506000134369","serial":"SN140","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(163,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800128520000,"session":"s-18","key":"09506000134376/SN141","uid":"04141","gtin":"09506000134376","serial":"SN141","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(164,'event','{"id":73,"device":"room-1","epoch":"e1","seq":38,"type":"garment.out","t_device":1800129120000,"t_gateway":1800129120000,"body":{"uid":"04140"}}');
INSERT INTO "stream" VALUES(165,'event','{"id":74,"device":"room-1","epoch":"e1","seq":39,"type":"garment.out","t_device":1800129120000,"t_gateway":1800129120000,"body":{"uid":"04141"}}');
INSERT INTO "stream" VALUES(166,'event','{"id":75,"device":"room-1","epoch":"e1","seq":40,"type":"room.free","t_device":1800129120000,"t_gateway":1800129120000,"body":{}}');
INSERT INTO "stream" VALUES(167,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800129120000,"session":"s-18","key":"09506000134369/SN140","uid":"04140","gtin":"09506000134369","serial":"SN140","device":"room-1"}');
INSERT INTO "stream" VALUES(168,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800129120000,"session":"s-18","key":"09506000134376/SN141","uid":"04141","gtin":"09506000134376","serial":"SN141","device":"room-1"}');
INSERT INTO "stream" VALUES(169,'fitting','{"type":"fitting.session.closed","room":"room-1","at":1800129120000,"session":"s-18","tried":["09506000134369","09506000134376"],"duration_ms":720000,"device":"room-1"}');
INSERT INTO "stream" VALUES(170,'event','{"id":76,"device":"room-2","epoch":"e1","seq":36,"type":"room.occupied","t_device":1800130800000,"t_gateway":1800130800000,"body":{}}');
INSERT INTO "stream" VALUES(171,'event','{"id":77,"device":"room-2","epoch":"e1","seq":37,"type":"garment.in","t_device":1800130860000,"t_gateway":1800130860000,"body":{"uid":"04150","tech":"ntag213","gtin":"09506000134376","serial":"SN150"}}');
INSERT INTO "stream" VALUES(172,'event','{"id":78,"device":"room-2","epoch":"e1","seq":38,"type":"garment.in","t_device":1800130920000,"t_gateway":1800130920000,"body":{"uid":"04151","tech":"ntag213","gtin":"09506000134383","serial":"SN151"}}');
INSERT INTO "stream" VALUES(173,'event','{"id":79,"device":"room-2","epoch":"e1","seq":39,"type":"garment.in","t_device":1800130980000,"t_gateway":1800130980000,"body":{"uid":"04152","tech":"ntag213","gtin":"09506000134352","serial":"SN152"}}');
INSERT INTO "stream" VALUES(174,'fitting','{"type":"fitting.session.started","room":"room-2","at":1800130800000,"session":"s-19","why":"occupied","device":"room-2"}');
INSERT INTO "stream" VALUES(175,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800130860000,"session":"s-19","key":"09506000134376/SN150","uid":"04150","gtin":"09506000134376","serial":"SN150","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(176,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800130920000,"session":"s-19","key":"09506000134383/SN151","uid":"04151","gtin":"09506000134383","serial":"SN151","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(177,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800130980000,"session":"s-19","key":"09506000134352/SN152","uid":"04152","gtin":"09506000134352","serial":"SN152","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(178,'event','{"id":80,"device":"room-2","epoch":"e1","seq":40,"type":"call.pressed","t_device":1800130980000,"t_gateway":1800130980000,"body":{}}');
INSERT INTO "stream" VALUES(179,'fitting','{"type":"fitting.request","room":"room-2","at":1800130980000,"request":{"id":"r-20","room":"room-2","kind":"call","state":"open","created":1800130980000,"updated":1800130980000,"reason":null,"via":"staff","history":[["open",1800130980000]],"session":"s-19","source":"button","garments":[{"key":"09506000134376/SN150","gtin":"09506000134376","serial":"SN150","uid":"04150"},{"key":"09506000134383/SN151","gtin":"09506000134383","serial":"SN151","uid":"04151"},{"key":"09506000134352/SN152","gtin":"09506000134352","serial":"SN152","uid":"04152"}]},"device":"room-2"}');
INSERT INTO "stream" VALUES(180,'fitting','{"type":"fitting.request","room":"room-2","at":1800130980000,"request":{"id":"r-20","room":"room-2","kind":"call","state":"acknowledged","created":1800130980000,"updated":1800130980000,"reason":null,"via":"staff","history":[["open",1800130980000],["acknowledged",1800130980000]],"session":"s-19","source":"button","garments":[{"key":"09506000134376/SN150","gtin":"09506000134376","serial":"SN150","uid":"04150"},{"key":"09506000134383/SN151","gtin":"09506000134383","serial":"SN151","uid":"04151"},{"key":"09506000134352/SN152","gtin":"09506000134352","serial":"SN152","uid":"04152"}],"by":"ben"},"device":"room-2"}');
INSERT INTO "stream" VALUES(181,'command','{"id":"c-c8c043254b74259b","device":"room-2","name":"call_ack","args":{},"idem_key":"fr:r-20:call_ack","status":"queued","reason":null,"result":null,"deadline":1800131580000,"created":1800130980000,"updated":1800130980000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(182,'fitting','{"type":"fitting.request","room":"room-2","at":1800130980000,"request":{"id":"r-20","room":"room-2","kind":"call","state":"done","created":1800130980000,"updated":1800130980000,"reason":null,"via":"staff","history":[["open",1800130980000],["acknowledged",1800130980000],["done",1800130980000]],"session":"s-19","source":"button","garments":[{"key":"09506000134376/SN150","gtin":"09506000134376","serial":"SN150","uid":"04150"},{"key":"09506000134383/SN151","gtin":"09506000134383","serial":"SN151","uid":"04151"},{"key":"09506000134352/SN152","gtin":"09506000134352","serial":"SN152","uid":"04152"}],"by":"ben"},"device":"room-2"}');
INSERT INTO "stream" VALUES(183,'event','{"id":81,"device":"room-2","epoch":"e1","seq":41,"type":"garment.out","t_device":1800131580000,"t_gateway":1800131580000,"body":{"uid":"04150"}}');
INSERT INTO "stream" VALUES(184,'event','{"id":82,"device":"room-2","epoch":"e1","seq":42,"type":"garment.out","t_device":1800131580000,"t_gateway":1800131580000,"body":{"uid":"04151"}}');
INSERT INTO "stream" VALUES(185,'event','{"id":83,"device":"room-2","epoch":"e1","seq":43,"type":"garment.out","t_device":1800131580000,"t_gateway":1800131580000,"body":{"uid":"04152"}}');
INSERT INTO "stream" VALUES(186,'event','{"id":84,"device":"room-2","epoch":"e1","seq":44,"type":"room.free","t_device":1800131580000,"t_gateway":1800131580000,"body":{}}');
INSERT INTO "stream" VALUES(187,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800131580000,"session":"s-19","key":"09506000134376/SN150","uid":"04150","gtin":"09506000134376","serial":"SN150","device":"room-2"}');
INSERT INTO "stream" VALUES(188,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800131580000,"session":"s-19","key":"09506000134383/SN151","uid":"04151","gtin":"09506000134383","serial":"SN151","device":"room-2"}');
INSERT INTO "stream" VALUES(189,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800131580000,"session":"s-19","key":"09506000134352/SN152","uid":"04152","gtin":"09506000134352","serial":"SN152","device":"room-2"}');
INSERT INTO "stream" VALUES(190,'fitting','{"type":"fitting.session.closed","room":"room-2","at":1800131580000,"session":"s-19","tried":["09506000134352","09506000134376","09506000134383"],"duration_ms":780000,"device":"room-2"}');
INSERT INTO "stream" VALUES(191,'event','{"id":85,"device":"room-1","epoch":"e1","seq":41,"type":"room.occupied","t_device":1800205200000,"t_gateway":1800205200000,"body":{}}');
INSERT INTO "stream" VALUES(192,'event','{"id":86,"device":"room-1","epoch":"e1","seq":42,"type":"garment.in","t_device":1800205260000,"t_gateway":1800205260000,"body":{"uid":"04200","tech":"ntag213","gtin":"09506000134376","serial":"SN200"}}');
INSERT INTO "stream" VALUES(193,'fitting','{"type":"fitting.session.started","room":"room-1","at":1800205200000,"session":"s-21","why":"occupied","device":"room-1"}');
INSERT INTO "stream" VALUES(194,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800205260000,"session":"s-21","key":"09506000134376/SN200","uid":"04200","gtin":"09506000134376","serial":"SN200","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(195,'event','{"id":87,"device":"room-1","epoch":"e1","seq":43,"type":"garment.out","t_device":1800205320000,"t_gateway":1800205320000,"body":{"uid":"04200"}}');
INSERT INTO "stream" VALUES(196,'event','{"id":88,"device":"room-1","epoch":"e1","seq":44,"type":"garment.in","t_device":1800205320000,"t_gateway":1800205320000,"body":{"uid":"04200","tech":"ntag213","gtin":"09506000134376","serial":"SN200"}}');
INSERT INTO "stream" VALUES(197,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800205320000,"session":"s-21","key":"09506000134376/SN200","uid":"04200","gtin":"09506000134376","serial":"SN200","device":"room-1"}');
INSERT INTO "stream" VALUES(198,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800205320000,"session":"s-21","key":"09506000134376/SN200","uid":"04200","gtin":"09506000134376","serial":"SN200","swap":true,"device":"room-1"}');
INSERT INTO "stream" VALUES(199,'fitting','{"type":"fitting.request","room":"room-1","at":1800205320000,"request":{"id":"r-22","room":"room-1","kind":"size","state":"open","created":1800205320000,"updated":1800205320000,"reason":null,"via":"staff","history":[["open",1800205320000]],"session":"s-21","gtin":"09506000134369","instead_of":"09506000134376","where":"stockroom"},"device":"room-1"}');
INSERT INTO "stream" VALUES(200,'fitting','{"type":"fitting.request","room":"room-1","at":1800205320000,"request":{"id":"r-22","room":"room-1","kind":"size","state":"acknowledged","created":1800205320000,"updated":1800205320000,"reason":null,"via":"staff","history":[["open",1800205320000],["acknowledged",1800205320000]],"session":"s-21","gtin":"09506000134369","instead_of":"09506000134376","where":"stockroom","by":"ana"},"device":"room-1"}');
INSERT INTO "stream" VALUES(201,'event','{"id":89,"device":"room-1","epoch":"e1","seq":45,"type":"garment.out","t_device":1800205920000,"t_gateway":1800205920000,"body":{"uid":"04200"}}');
INSERT INTO "stream" VALUES(202,'event','{"id":90,"device":"room-1","epoch":"e1","seq":46,"type":"room.free","t_device":1800205920000,"t_gateway":1800205920000,"body":{}}');
INSERT INTO "stream" VALUES(203,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800205920000,"session":"s-21","key":"09506000134376/SN200","uid":"04200","gtin":"09506000134376","serial":"SN200","device":"room-1"}');
INSERT INTO "stream" VALUES(204,'fitting','{"type":"fitting.request","room":"room-1","at":1800205920000,"request":{"id":"r-22","room":"room-1","kind":"size","state":"cancelled","created":1800205320000,"updated":1800205920000,"reason":"room-free","via":"staff","history":[["open",1800205320000],["acknowledged",1800205320000],["cancelled",1800205920000]],"session":"s-21","gtin":"09506000134369","instead_of":"09506000134376","where":"stockroom","by":"ana"},"device":"room-1"}');
INSERT INTO "stream" VALUES(205,'fitting','{"type":"fitting.session.closed","room":"room-1","at":1800205920000,"session":"s-21","tried":["09506000134376"],"duration_ms":720000,"device":"room-1"}');
INSERT INTO "stream" VALUES(206,'event','{"id":91,"device":"room-2","epoch":"e1","seq":45,"type":"room.occupied","t_device":1800207600000,"t_gateway":1800207600000,"body":{}}');
INSERT INTO "stream" VALUES(207,'event','{"id":92,"device":"room-2","epoch":"e1","seq":46,"type":"garment.in","t_device":1800207660000,"t_gateway":1800207660000,"body":{"uid":"04210","tech":"ntag213","gtin":"09506000134383","serial":"SN210"}}');
INSERT INTO "stream" VALUES(208,'event','{"id":93,"device":"room-2","epoch":"e1","seq":47,"type":"garment.in","t_device":1800207720000,"t_gateway":1800207720000,"body":{"uid":"04211","tech":"ntag213","gtin":"09506000134352","serial":"SN211"}}');
INSERT INTO "stream" VALUES(209,'fitting','{"type":"fitting.session.started","room":"room-2","at":1800207600000,"session":"s-23","why":"occupied","device":"room-2"}');
INSERT INTO "stream" VALUES(210,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800207660000,"session":"s-23","key":"09506000134383/SN210","uid":"04210","gtin":"09506000134383","serial":"SN210","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(211,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800207720000,"session":"s-23","key":"09506000134352/SN211","uid":"04211","gtin":"09506000134352","serial":"SN211","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(212,'event','{"id":94,"device":"room-2","epoch":"e1","seq":48,"type":"call.pressed","t_device":1800207720000,"t_gateway":1800207720000,"body":{}}');
INSERT INTO "stream" VALUES(213,'fitting','{"type":"fitting.request","room":"room-2","at":1800207720000,"request":{"id":"r-24","room":"room-2","kind":"call","state":"open","created":1800207720000,"updated":1800207720000,"reason":null,"via":"staff","history":[["open",1800207720000]],"session":"s-23","source":"button","garments":[{"key":"09506000134383/SN210","gtin":"09506000134383","serial":"SN210","uid":"04210"},{"key":"09506000134352/SN211","gtin":"09506000134352","serial":"SN211","uid":"04211"}]},"device":"room-2"}');
INSERT INTO "stream" VALUES(214,'fitting','{"type":"fitting.request","room":"room-2","at":1800207720000,"request":{"id":"r-24","room":"room-2","kind":"call","state":"acknowledged","created":1800207720000,"updated":1800207720000,"reason":null,"via":"staff","history":[["open",1800207720000],["acknowledged",1800207720000]],"session":"s-23","source":"button","garments":[{"key":"09506000134383/SN210","gtin":"09506000134383","serial":"SN210","uid":"04210"},{"key":"09506000134352/SN211","gtin":"09506000134352","serial":"SN211","uid":"04211"}],"by":"ben"},"device":"room-2"}');
INSERT INTO "stream" VALUES(215,'command','{"id":"c-3602b516bb10ca84","device":"room-2","name":"call_ack","args":{},"idem_key":"fr:r-24:call_ack","status":"queued","reason":null,"result":null,"deadline":1800208320000,"created":1800207720000,"updated":1800207720000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(216,'fitting','{"type":"fitting.request","room":"room-2","at":1800207720000,"request":{"id":"r-24","room":"room-2","kind":"call","state":"done","created":1800207720000,"updated":1800207720000,"reason":null,"via":"staff","history":[["open",1800207720000],["acknowledged",1800207720000],["done",1800207720000]],"session":"s-23","source":"button","garments":[{"key":"09506000134383/SN210","gtin":"09506000134383","serial":"SN210","uid":"04210"},{"key":"09506000134352/SN211","gtin":"09506000134352","serial":"SN211","uid":"04211"}],"by":"ben"},"device":"room-2"}');
INSERT INTO "stream" VALUES(217,'event','{"id":95,"device":"room-2","epoch":"e1","seq":49,"type":"garment.out","t_device":1800208320000,"t_gateway":1800208320000,"body":{"uid":"04210"}}');
INSERT INTO "stream" VALUES(218,'event','{"id":96,"device":"room-2","epoch":"e1","seq":50,"type":"garment.out","t_device":1800208320000,"t_gateway":1800208320000,"body":{"uid":"04211"}}');
INSERT INTO "stream" VALUES(219,'event','{"id":97,"device":"room-2","epoch":"e1","seq":51,"type":"room.free","t_device":1800208320000,"t_gateway":1800208320000,"body":{}}');
INSERT INTO "stream" VALUES(220,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800208320000,"session":"s-23","key":"09506000134383/SN210","uid":"04210","gtin":"09506000134383","serial":"SN210","device":"room-2"}');
INSERT INTO "stream" VALUES(221,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800208320000,"session":"s-23","key":"09506000134352/SN211","uid":"04211","gtin":"09506000134352","serial":"SN211","device":"room-2"}');
INSERT INTO "stream" VALUES(222,'fitting','{"type":"fitting.session.closed","room":"room-2","at":1800208320000,"session":"s-23","tried":["09506000134352","09506000134383"],"duration_ms":720000,"device":"room-2"}');
INSERT INTO "stream" VALUES(223,'event','{"id":98,"device":"room-1","epoch":"e1","seq":47,"type":"room.occupied","t_device":1800210000000,"t_gateway":1800210000000,"body":{}}');
INSERT INTO "stream" VALUES(224,'event','{"id":99,"device":"room-1","epoch":"e1","seq":48,"type":"garment.in","t_device":1800210060000,"t_gateway":1800210060000,"body":{"uid":"04220","tech":"ntag213","gtin":"09506000134352","serial":"SN220"}}');
INSERT INTO "stream" VALUES(225,'event','{"id":100,"device":"room-1","epoch":"e1","seq":49,"type":"garment.in","t_device":1800210120000,"t_gateway":1800210120000,"body":{"uid":"04221","tech":"ntag213","gtin":"09506000134369","serial":"SN221"}}');
INSERT INTO "stream" VALUES(226,'event','{"id":101,"device":"room-1","epoch":"e1","seq":50,"type":"garment.in","t_device":1800210180000,"t_gateway":1800210180000,"body":{"uid":"04222","tech":"ntag213","gtin":"09506000134376","serial":"SN222"}}');
INSERT INTO "stream" VALUES(227,'fitting','{"type":"fitting.session.started","room":"room-1","at":1800210000000,"session":"s-25","why":"occupied","device":"room-1"}');
INSERT INTO "stream" VALUES(228,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800210060000,"session":"s-25","key":"09506000134352/SN220","uid":"04220","gtin":"09506000134352","serial":"SN220","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(229,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800210120000,"session":"s-25","key":"09506000134369/SN221","uid":"04221","gtin":"09506000134369","serial":"SN221","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(230,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800210180000,"session":"s-25","key":"09506000134376/SN222","uid":"04222","gtin":"09506000134376","serial":"SN222","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(231,'event','{"id":102,"device":"room-1","epoch":"e1","seq":51,"type":"garment.out","t_device":1800210780000,"t_gateway":1800210780000,"body":{"uid":"04220"}}');
INSERT INTO "stream" VALUES(232,'event','{"id":103,"device":"room-1","epoch":"e1","seq":52,"type":"garment.out","t_device":1800210780000,"t_gateway":1800210780000,"body":{"uid":"04221"}}');
INSERT INTO "stream" VALUES(233,'event','{"id":104,"device":"room-1","epoch":"e1","seq":53,"type":"garment.out","t_device":1800210780000,"t_gateway":1800210780000,"body":{"uid":"04222"}}');
INSERT INTO "stream" VALUES(234,'event','{"id":105,"device":"room-1","epoch":"e1","seq":54,"type":"room.free","t_device":1800210780000,"t_gateway":1800210780000,"body":{}}');
INSERT INTO "stream" VALUES(235,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800210780000,"session":"s-25","key":"09506000134352/SN220","uid":"04220","gtin":"09506000134352","serial":"SN220","device":"room-1"}');
INSERT INTO "stream" VALUES(236,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800210780000,"session":"s-25","key":"09506000134369/SN221","uid":"04221","gtin":"09506000134369","serial":"SN221","device":"room-1"}');
INSERT INTO "stream" VALUES(237,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800210780000,"session":"s-25","key":"09506000134376/SN222","uid":"04222","gtin":"09506000134376","serial":"SN222","device":"room-1"}');
INSERT INTO "stream" VALUES(238,'fitting','{"type":"fitting.session.closed","room":"room-1","at":1800210780000,"session":"s-25","tried":["09506000134352","09506000134369","09506000134376"],"duration_ms":780000,"device":"room-1"}');
INSERT INTO "stream" VALUES(239,'event','{"id":106,"device":"room-2","epoch":"e1","seq":52,"type":"room.occupied","t_device":1800212400000,"t_gateway":1800212400000,"body":{}}');
INSERT INTO "stream" VALUES(240,'event','{"id":107,"device":"room-2","epoch":"e1","seq":53,"type":"garment.in","t_device":1800212460000,"t_gateway":1800212460000,"body":{"uid":"04230","tech":"ntag213","gtin":"09506000134369","serial":"SN230"}}');
INSERT INTO "stream" VALUES(241,'fitting','{"type":"fitting.session.started","room":"room-2","at":1800212400000,"session":"s-26","why":"occupied","device":"room-2"}');
INSERT INTO "stream" VALUES(242,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800212460000,"session":"s-26","key":"09506000134369/SN230","uid":"04230","gtin":"09506000134369","serial":"SN230","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(243,'event','{"id":108,"device":"room-2","epoch":"e1","seq":54,"type":"garment.out","t_device":1800212520000,"t_gateway":1800212520000,"body":{"uid":"04230"}}');
INSERT INTO "stream" VALUES(244,'event','{"id":109,"device":"room-2","epoch":"e1","seq":55,"type":"garment.in","t_device":1800212520000,"t_gateway":1800212520000,"body":{"uid":"04230","tech":"ntag213","gtin":"09506000134369","serial":"SN230"}}');
INSERT INTO "stream" VALUES(245,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800212520000,"session":"s-26","key":"09506000134369/SN230","uid":"04230","gtin":"09506000134369","serial":"SN230","device":"room-2"}');
INSERT INTO "stream" VALUES(246,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800212520000,"session":"s-26","key":"09506000134369/SN230","uid":"04230","gtin":"09506000134369","serial":"SN230","swap":true,"device":"room-2"}');
INSERT INTO "stream" VALUES(247,'fitting','{"type":"fitting.request","room":"room-2","at":1800212520000,"request":{"id":"r-27","room":"room-2","kind":"size","state":"open","created":1800212520000,"updated":1800212520000,"reason":null,"via":"staff","history":[["open",1800212520000]],"session":"s-26","gtin":"09506000134352","instead_of":"09506000134369","where":"floor"},"device":"room-2"}');
INSERT INTO "stream" VALUES(248,'event','{"id":110,"device":"room-2","epoch":"e1","seq":56,"type":"garment.out","t_device":1800213120000,"t_gateway":1800213120000,"body":{"uid":"04230"}}');
INSERT INTO "stream" VALUES(249,'event','{"id":111,"device":"room-2","epoch":"e1","seq":57,"type":"room.free","t_device":1800213120000,"t_gateway":1800213120000,"body":{}}');
INSERT INTO "stream" VALUES(250,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800213120000,"session":"s-26","key":"09506000134369/SN230","uid":"04230","gtin":"09506000134369","serial":"SN230","device":"room-2"}');
INSERT INTO "stream" VALUES(251,'fitting','{"type":"fitting.request","room":"room-2","at":1800213120000,"request":{"id":"r-27","room":"room-2","kind":"size","state":"cancelled","created":1800212520000,"updated":1800213120000,"reason":"room-free","via":"staff","history":[["open",1800212520000],["cancelled",1800213120000]],"session":"s-26","gtin":"09506000134352","instead_of":"09506000134369","where":"floor"},"device":"room-2"}');
INSERT INTO "stream" VALUES(252,'fitting','{"type":"fitting.session.closed","room":"room-2","at":1800213120000,"session":"s-26","tried":["09506000134369"],"duration_ms":720000,"device":"room-2"}');
INSERT INTO "stream" VALUES(253,'event','{"id":112,"device":"room-1","epoch":"e1","seq":55,"type":"room.occupied","t_device":1800214800000,"t_gateway":1800214800000,"body":{}}');
INSERT INTO "stream" VALUES(254,'event','{"id":113,"device":"room-1","epoch":"e1","seq":56,"type":"garment.in","t_device":1800214860000,"t_gateway":1800214860000,"body":{"uid":"04240","tech":"ntag213","gtin":"09506000134376","serial":"SN240"}}');
INSERT INTO "stream" VALUES(255,'event','{"id":114,"device":"room-1","epoch":"e1","seq":57,"type":"garment.in","t_device":1800214920000,"t_gateway":1800214920000,"body":{"uid":"04241","tech":"ntag213","gtin":"09506000134383","serial":"SN241"}}');
INSERT INTO "stream" VALUES(256,'fitting','{"type":"fitting.session.started","room":"room-1","at":1800214800000,"session":"s-28","why":"occupied","device":"room-1"}');
INSERT INTO "stream" VALUES(257,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800214860000,"session":"s-28","key":"09506000134376/SN240","uid":"04240","gtin":"09506000134376","serial":"SN240","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(258,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800214920000,"session":"s-28","key":"09506000134383/SN241","uid":"04241","gtin":"09506000134383","serial":"SN241","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(259,'event','{"id":115,"device":"room-1","epoch":"e1","seq":58,"type":"garment.out","t_device":1800215520000,"t_gateway":1800215520000,"body":{"uid":"04240"}}');
INSERT INTO "stream" VALUES(260,'event','{"id":116,"device":"room-1","epoch":"e1","seq":59,"type":"garment.out","t_device":1800215520000,"t_gateway":1800215520000,"body":{"uid":"04241"}}');
INSERT INTO "stream" VALUES(261,'event','{"id":117,"device":"room-1","epoch":"e1","seq":60,"type":"room.free","t_device":1800215520000,"t_gateway":1800215520000,"body":{}}');
INSERT INTO "stream" VALUES(262,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800215520000,"session":"s-28","key":"09506000134376/SN240","uid":"04240","gtin":"09506000134376","serial":"SN240","device":"room-1"}');
INSERT INTO "stream" VALUES(263,'fitting','{"type":"fitting.garment.out","room":"room-1","at":1800215520000,"session":"s-28","key":"09506000134383/SN241","uid":"04241","gtin":"09506000134383","serial":"SN241","device":"room-1"}');
INSERT INTO "stream" VALUES(264,'fitting','{"type":"fitting.session.closed","room":"room-1","at":1800215520000,"session":"s-28","tried":["09506000134376","09506000134383"],"duration_ms":720000,"device":"room-1"}');
INSERT INTO "stream" VALUES(265,'event','{"id":118,"device":"room-2","epoch":"e1","seq":58,"type":"room.occupied","t_device":1800217200000,"t_gateway":1800217200000,"body":{}}');
INSERT INTO "stream" VALUES(266,'event','{"id":119,"device":"room-2","epoch":"e1","seq":59,"type":"garment.in","t_device":1800217260000,"t_gateway":1800217260000,"body":{"uid":"04250","tech":"ntag213","gtin":"09506000134383","serial":"SN250"}}');
INSERT INTO "stream" VALUES(267,'event','{"id":120,"device":"room-2","epoch":"e1","seq":60,"type":"garment.in","t_device":1800217320000,"t_gateway":1800217320000,"body":{"uid":"04251","tech":"ntag213","gtin":"09506000134352","serial":"SN251"}}');
INSERT INTO "stream" VALUES(268,'event','{"id":121,"device":"room-2","epoch":"e1","seq":61,"type":"garment.in","t_device":1800217380000,"t_gateway":1800217380000,"body":{"uid":"04252","tech":"ntag213","gtin":"09506000134369","serial":"SN252"}}');
INSERT INTO "stream" VALUES(269,'fitting','{"type":"fitting.session.started","room":"room-2","at":1800217200000,"session":"s-29","why":"occupied","device":"room-2"}');
INSERT INTO "stream" VALUES(270,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800217260000,"session":"s-29","key":"09506000134383/SN250","uid":"04250","gtin":"09506000134383","serial":"SN250","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(271,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800217320000,"session":"s-29","key":"09506000134352/SN251","uid":"04251","gtin":"09506000134352","serial":"SN251","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(272,'fitting','{"type":"fitting.garment.in","room":"room-2","at":1800217380000,"session":"s-29","key":"09506000134369/SN252","uid":"04252","gtin":"09506000134369","serial":"SN252","swap":false,"device":"room-2"}');
INSERT INTO "stream" VALUES(273,'event','{"id":122,"device":"room-2","epoch":"e1","seq":62,"type":"call.pressed","t_device":1800217380000,"t_gateway":1800217380000,"body":{}}');
INSERT INTO "stream" VALUES(274,'fitting','{"type":"fitting.request","room":"room-2","at":1800217380000,"request":{"id":"r-30","room":"room-2","kind":"call","state":"open","created":1800217380000,"updated":1800217380000,"reason":null,"via":"staff","history":[["open",1800217380000]],"session":"s-29","source":"button","garments":[{"key":"09506000134383/SN250","gtin":"09506000134383","serial":"SN250","uid":"04250"},{"key":"09506000134352/SN251","gtin":"09506000134352","serial":"SN251","uid":"04251"},{"key":"09506000134369/SN252","gtin":"09506000134369","serial":"SN252","uid":"04252"}]},"device":"room-2"}');
INSERT INTO "stream" VALUES(275,'fitting','{"type":"fitting.request","room":"room-2","at":1800217380000,"request":{"id":"r-30","room":"room-2","kind":"call","state":"acknowledged","created":1800217380000,"updated":1800217380000,"reason":null,"via":"staff","history":[["open",1800217380000],["acknowledged",1800217380000]],"session":"s-29","source":"button","garments":[{"key":"09506000134383/SN250","gtin":"09506000134383","serial":"SN250","uid":"04250"},{"key":"09506000134352/SN251","gtin":"09506000134352","serial":"SN251","uid":"04251"},{"key":"09506000134369/SN252","gtin":"09506000134369","serial":"SN252","uid":"04252"}],"by":"ben"},"device":"room-2"}');
INSERT INTO "stream" VALUES(276,'command','{"id":"c-a103445067595505","device":"room-2","name":"call_ack","args":{},"idem_key":"fr:r-30:call_ack","status":"queued","reason":null,"result":null,"deadline":1800217980000,"created":1800217380000,"updated":1800217380000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(277,'fitting','{"type":"fitting.request","room":"room-2","at":1800217380000,"request":{"id":"r-30","room":"room-2","kind":"call","state":"done","created":1800217380000,"updated":1800217380000,"reason":null,"via":"staff","history":[["open",1800217380000],["acknowledged",1800217380000],["done",1800217380000]],"session":"s-29","source":"button","garments":[{"key":"09506000134383/SN250","gtin":"09506000134383","serial":"SN250","uid":"04250"},{"key":"09506000134352/SN251","gtin":"09506000134352","serial":"SN251","uid":"04251"},{"key":"09506000134369/SN252","gtin":"09506000134369","serial":"SN252","uid":"04252"}],"by":"ben"},"device":"room-2"}');
INSERT INTO "stream" VALUES(278,'event','{"id":123,"device":"room-2","epoch":"e1","seq":63,"type":"garment.out","t_device":1800217980000,"t_gateway":1800217980000,"body":{"uid":"04250"}}');
INSERT INTO "stream" VALUES(279,'event','{"id":124,"device":"room-2","epoch":"e1","seq":64,"type":"garment.out","t_device":1800217980000,"t_gateway":1800217980000,"body":{"uid":"04251"}}');
INSERT INTO "stream" VALUES(280,'event','{"id":125,"device":"room-2","epoch":"e1","seq":65,"type":"garment.out","t_device":1800217980000,"t_gateway":1800217980000,"body":{"uid":"04252"}}');
INSERT INTO "stream" VALUES(281,'event','{"id":126,"device":"room-2","epoch":"e1","seq":66,"type":"room.free","t_device":1800217980000,"t_gateway":1800217980000,"body":{}}');
INSERT INTO "stream" VALUES(282,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800217980000,"session":"s-29","key":"09506000134383/SN250","uid":"04250","gtin":"09506000134383","serial":"SN250","device":"room-2"}');
INSERT INTO "stream" VALUES(283,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800217980000,"session":"s-29","key":"09506000134352/SN251","uid":"04251","gtin":"09506000134352","serial":"SN251","device":"room-2"}');
INSERT INTO "stream" VALUES(284,'fitting','{"type":"fitting.garment.out","room":"room-2","at":1800217980000,"session":"s-29","key":"09506000134369/SN252","uid":"04252","gtin":"09506000134369","serial":"SN252","device":"room-2"}');
INSERT INTO "stream" VALUES(285,'fitting','{"type":"fitting.session.closed","room":"room-2","at":1800217980000,"session":"s-29","tried":["09506000134352","09506000134369","09506000134383"],"duration_ms":780000,"device":"room-2"}');
INSERT INTO "stream" VALUES(286,'event','{"id":127,"device":"room-1","epoch":"e1","seq":61,"type":"room.occupied","t_device":1800295200000,"t_gateway":1800295200000,"body":{}}');
INSERT INTO "stream" VALUES(287,'event','{"id":128,"device":"room-1","epoch":"e1","seq":62,"type":"garment.in","t_device":1800295200000,"t_gateway":1800295200000,"body":{"uid":"04live","tech":"ntag213","gtin":"09506000134376","serial":"SNlive"}}');
INSERT INTO "stream" VALUES(288,'event','{"id":129,"device":"room-1","epoch":"e1","seq":63,"type":"call.pressed","t_device":1800295200000,"t_gateway":1800295200000,"body":{}}');
INSERT INTO "stream" VALUES(289,'fitting','{"type":"fitting.session.started","room":"room-1","at":1800295200000,"session":"s-31","why":"occupied","device":"room-1"}');
INSERT INTO "stream" VALUES(290,'fitting','{"type":"fitting.garment.in","room":"room-1","at":1800295200000,"session":"s-31","key":"09506000134376/SNlive","uid":"04live","gtin":"09506000134376","serial":"SNlive","swap":false,"device":"room-1"}');
INSERT INTO "stream" VALUES(291,'fitting','{"type":"fitting.request","room":"room-1","at":1800295200000,"request":{"id":"r-32","room":"room-1","kind":"call","state":"open","created":1800295200000,"updated":1800295200000,"reason":null,"via":"staff","history":[["open",1800295200000]],"session":"s-31","source":"button","garments":[{"key":"09506000134376/SNlive","gtin":"09506000134376","serial":"SNlive","uid":"04live"}]},"device":"room-1"}');
INSERT INTO "stream" VALUES(292,'locker','{"type":"order.assigned","device":"lk-u1","bank":"lk-u1","order":"o-1","compartment":1,"old":null,"state":"assigned","reason":"assigned","at":1800028800.0}');
INSERT INTO "stream" VALUES(293,'event','{"id":130,"device":"lk-u1","epoch":"e1","seq":1,"type":"door.opened","t_device":1800028800000,"t_gateway":1800028800000,"body":{"compartment":1,"why":"load","order":null}}');
INSERT INTO "stream" VALUES(294,'event','{"id":131,"device":"lk-u1","epoch":"e1","seq":2,"type":"door.closed","t_device":1800028800000,"t_gateway":1800028800000,"body":{"compartment":1,"why":"load","open_ms":900,"occupied":1}}');
INSERT INTO "stream" VALUES(295,'event','{"id":132,"device":"lk-u1","epoch":"e1","seq":3,"type":"order.loaded","t_device":1800028800000,"t_gateway":1800028800000,"body":{"compartment":1,"occupied":1}}');
INSERT INTO "stream" VALUES(296,'locker','{"type":"order.ready","device":"lk-u1","bank":"lk-u1","order":"o-1","compartment":1,"old":"assigned","state":"ready","reason":"loaded","at":1800028860.0,"ready_id":"3cd8f5a61a758e33","expires_at":1800288060.0}');
INSERT INTO "stream" VALUES(297,'command','{"id":"c-afd15dbde635d9a6","device":"lk-u1","name":"set_order","args":{"compartment":1,"order":"o-1","mac":"[redacted]","exp":1800288060000,"salt_id":"02b990bd","key_id":"70c69129"},"idem_key":"[redacted]","status":"queued","reason":null,"result":null,"deadline":1800115260000,"created":1800028860000,"updated":1800028860000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(298,'event','{"id":133,"device":"lk-u1","epoch":"e1","seq":4,"type":"door.opened","t_device":1800030660000,"t_gateway":1800030660000,"body":{"compartment":1,"why":"pickup","order":"o-1"}}');
INSERT INTO "stream" VALUES(299,'event','{"id":134,"device":"lk-u1","epoch":"e1","seq":5,"type":"pickup.collected","t_device":1800030660000,"t_gateway":1800030660000,"body":{"compartment":1,"order":"o-1"}}');
INSERT INTO "stream" VALUES(300,'locker','{"type":"order.collected","device":"lk-u1","bank":"lk-u1","order":"o-1","compartment":1,"old":"ready","state":"collected","reason":"collected","at":1800030660.0}');
INSERT INTO "stream" VALUES(301,'locker','{"type":"order.assigned","device":"lk-u1","bank":"lk-u1","order":"o-2","compartment":5,"old":null,"state":"assigned","reason":"assigned","at":1800030660.0}');
INSERT INTO "stream" VALUES(302,'event','{"id":135,"device":"lk-u1","epoch":"e1","seq":6,"type":"door.opened","t_device":1800030660000,"t_gateway":1800030660000,"body":{"compartment":5,"why":"load","order":null}}');
INSERT INTO "stream" VALUES(303,'event','{"id":136,"device":"lk-u1","epoch":"e1","seq":7,"type":"door.closed","t_device":1800030660000,"t_gateway":1800030660000,"body":{"compartment":5,"why":"load","open_ms":900,"occupied":1}}');
INSERT INTO "stream" VALUES(304,'event','{"id":137,"device":"lk-u1","epoch":"e1","seq":8,"type":"order.loaded","t_device":1800030660000,"t_gateway":1800030660000,"body":{"compartment":5,"occupied":1}}');
INSERT INTO "stream" VALUES(305,'locker','{"type":"order.ready","device":"lk-u1","bank":"lk-u1","order":"o-2","compartment":5,"old":"assigned","state":"ready","reason":"loaded","at":1800030720.0,"ready_id":"858579c84d0d2511","expires_at":1800289920.0}');
INSERT INTO "stream" VALUES(306,'command','{"id":"c-65dc06d6ebc2fc10","device":"lk-u1","name":"set_order","args":{"compartment":5,"order":"o-2","mac":"[redacted]","exp":1800289920000,"salt_id":"02b990bd","key_id":"70c69129"},"idem_key":"[redacted]","status":"queued","reason":null,"result":null,"deadline":1800117120000,"created":1800030720000,"updated":1800030720000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(307,'event','{"id":138,"device":"lk-u1","epoch":"e1","seq":9,"type":"door.opened","t_device":1800032520000,"t_gateway":1800032520000,"body":{"compartment":5,"why":"pickup","order":"o-2"}}');
INSERT INTO "stream" VALUES(308,'event','{"id":139,"device":"lk-u1","epoch":"e1","seq":10,"type":"pickup.collected","t_device":1800032520000,"t_gateway":1800032520000,"body":{"compartment":5,"order":"o-2"}}');
INSERT INTO "stream" VALUES(309,'locker','{"type":"order.collected","device":"lk-u1","bank":"lk-u1","order":"o-2","compartment":5,"old":"ready","state":"collected","reason":"collected","at":1800032520.0}');
INSERT INTO "stream" VALUES(310,'locker','{"type":"order.assigned","device":"lk-u1","bank":"lk-u1","order":"o-3","compartment":9,"old":null,"state":"assigned","reason":"assigned","at":1800032520.0}');
INSERT INTO "stream" VALUES(311,'event','{"id":140,"device":"lk-u1","epoch":"e1","seq":11,"type":"door.opened","t_device":1800032520000,"t_gateway":1800032520000,"body":{"compartment":9,"why":"load","order":null}}');
INSERT INTO "stream" VALUES(312,'event','{"id":141,"device":"lk-u1","epoch":"e1","seq":12,"type":"door.closed","t_device":1800032520000,"t_gateway":1800032520000,"body":{"compartment":9,"why":"load","open_ms":900,"occupied":1}}');
INSERT INTO "stream" VALUES(313,'event','{"id":142,"device":"lk-u1","epoch":"e1","seq":13,"type":"order.loaded","t_device":1800032520000,"t_gateway":1800032520000,"body":{"compartment":9,"occupied":1}}');
INSERT INTO "stream" VALUES(314,'locker','{"type":"order.ready","device":"lk-u1","bank":"lk-u1","order":"o-3","compartment":9,"old":"assigned","state":"ready","reason":"loaded","at":1800032580.0,"ready_id":"4c6e2627fd1d7b98","expires_at":1800291780.0}');
INSERT INTO "stream" VALUES(315,'command','{"id":"c-4ac09ab21e582cd9","device":"lk-u1","name":"set_order","args":{"compartment":9,"order":"o-3","mac":"[redacted]","exp":1800291780000,"salt_id":"02b990bd","key_id":"70c69129"},"idem_key":"[redacted]","status":"queued","reason":null,"result":null,"deadline":1800118980000,"created":1800032580000,"updated":1800032580000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(316,'locker','{"type":"order.assigned","device":"lk-u1","bank":"lk-u1","order":"o-4","compartment":1,"old":null,"state":"assigned","reason":"assigned","at":1800115200.0}');
INSERT INTO "stream" VALUES(317,'event','{"id":143,"device":"lk-u1","epoch":"e1","seq":14,"type":"door.opened","t_device":1800115200000,"t_gateway":1800115200000,"body":{"compartment":1,"why":"load","order":null}}');
INSERT INTO "stream" VALUES(318,'event','{"id":144,"device":"lk-u1","epoch":"e1","seq":15,"type":"door.closed","t_device":1800115200000,"t_gateway":1800115200000,"body":{"compartment":1,"why":"load","open_ms":900,"occupied":1}}');
INSERT INTO "stream" VALUES(319,'event','{"id":145,"device":"lk-u1","epoch":"e1","seq":16,"type":"order.loaded","t_device":1800115200000,"t_gateway":1800115200000,"body":{"compartment":1,"occupied":1}}');
INSERT INTO "stream" VALUES(320,'locker','{"type":"order.ready","device":"lk-u1","bank":"lk-u1","order":"o-4","compartment":1,"old":"assigned","state":"ready","reason":"loaded","at":1800115260.0,"ready_id":"ea3f588281c11092","expires_at":1800374460.0}');
INSERT INTO "stream" VALUES(321,'command','{"id":"c-5a0ed1d79954d286","device":"lk-u1","name":"set_order","args":{"compartment":1,"order":"o-4","mac":"[redacted]","exp":1800374460000,"salt_id":"02b990bd","key_id":"70c69129"},"idem_key":"[redacted]","status":"queued","reason":null,"result":null,"deadline":1800201660000,"created":1800115260000,"updated":1800115260000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(322,'locker','{"type":"order.code","device":"lk-u1","bank":"lk-u1","order":"o-4","compartment":1,"state":"ready","at":1800115260.0,"ready_id":"746f7cf26d78f6c1","expires_at":1800374460.0}');
INSERT INTO "stream" VALUES(323,'command','{"id":"c-003b7471136c98b9","device":"lk-u1","name":"set_order","args":{"compartment":1,"order":"o-4","mac":"[redacted]","exp":1800374460000,"salt_id":"02b990bd","key_id":"70c69129"},"idem_key":"[redacted]","status":"queued","reason":null,"result":null,"deadline":1800201660000,"created":1800115260000,"updated":1800115260000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(324,'event','{"id":146,"device":"lk-u1","epoch":"e1","seq":17,"type":"door.opened","t_device":1800117060000,"t_gateway":1800117060000,"body":{"compartment":1,"why":"pickup","order":"o-4"}}');
INSERT INTO "stream" VALUES(325,'event','{"id":147,"device":"lk-u1","epoch":"e1","seq":18,"type":"pickup.collected","t_device":1800117060000,"t_gateway":1800117060000,"body":{"compartment":1,"order":"o-4"}}');
INSERT INTO "stream" VALUES(326,'locker','{"type":"order.collected","device":"lk-u1","bank":"lk-u1","order":"o-4","compartment":1,"old":"ready","state":"collected","reason":"collected","at":1800117060.0}');
INSERT INTO "stream" VALUES(327,'locker','{"type":"order.assigned","device":"lk-u1","bank":"lk-u1","order":"o-5","compartment":5,"old":null,"state":"assigned","reason":"assigned","at":1800117060.0}');
INSERT INTO "stream" VALUES(328,'locker','{"type":"order.cancelled","device":"lk-u1","bank":"lk-u1","order":"o-5","compartment":5,"old":"assigned","state":"cancelled","reason":"cancelled","at":1800117060.0}');
INSERT INTO "stream" VALUES(329,'locker','{"type":"order.assigned","device":"lk-u1","bank":"lk-u1","order":"o-6","compartment":10,"old":null,"state":"assigned","reason":"assigned","at":1800117060.0}');
INSERT INTO "stream" VALUES(330,'event','{"id":148,"device":"lk-u1","epoch":"e1","seq":19,"type":"door.opened","t_device":1800117060000,"t_gateway":1800117060000,"body":{"compartment":10,"why":"load","order":null}}');
INSERT INTO "stream" VALUES(331,'event','{"id":149,"device":"lk-u1","epoch":"e1","seq":20,"type":"door.closed","t_device":1800117060000,"t_gateway":1800117060000,"body":{"compartment":10,"why":"load","open_ms":900,"occupied":1}}');
INSERT INTO "stream" VALUES(332,'event','{"id":150,"device":"lk-u1","epoch":"e1","seq":21,"type":"order.loaded","t_device":1800117060000,"t_gateway":1800117060000,"body":{"compartment":10,"occupied":1}}');
INSERT INTO "stream" VALUES(333,'locker','{"type":"order.ready","device":"lk-u1","bank":"lk-u1","order":"o-6","compartment":10,"old":"assigned","state":"ready","reason":"loaded","at":1800117120.0,"ready_id":"abca29496f4e174c","expires_at":1800376320.0}');
INSERT INTO "stream" VALUES(334,'command','{"id":"c-55db2ba47b162571","device":"lk-u1","name":"set_order","args":{"compartment":10,"order":"o-6","mac":"[redacted]","exp":1800376320000,"salt_id":"02b990bd","key_id":"70c69129"},"idem_key":"[redacted]","status":"queued","reason":null,"result":null,"deadline":1800203520000,"created":1800117120000,"updated":1800117120000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(335,'locker','{"type":"order.assigned","device":"lk-u1","bank":"lk-u1","order":"o-7","compartment":1,"old":null,"state":"assigned","reason":"assigned","at":1800201600.0}');
INSERT INTO "stream" VALUES(336,'locker','{"type":"order.assigned","device":"lk-u1","bank":"lk-u1","order":"o-8","compartment":5,"old":null,"state":"assigned","reason":"assigned","at":1800201600.0}');
INSERT INTO "stream" VALUES(337,'event','{"id":151,"device":"lk-u1","epoch":"e1","seq":22,"type":"door.opened","t_device":1800201600000,"t_gateway":1800201600000,"body":{"compartment":5,"why":"load","order":null}}');
INSERT INTO "stream" VALUES(338,'event','{"id":152,"device":"lk-u1","epoch":"e1","seq":23,"type":"door.closed","t_device":1800201600000,"t_gateway":1800201600000,"body":{"compartment":5,"why":"load","open_ms":900,"occupied":1}}');
INSERT INTO "stream" VALUES(339,'event','{"id":153,"device":"lk-u1","epoch":"e1","seq":24,"type":"order.loaded","t_device":1800201600000,"t_gateway":1800201600000,"body":{"compartment":5,"occupied":1}}');
INSERT INTO "stream" VALUES(340,'locker','{"type":"order.ready","device":"lk-u1","bank":"lk-u1","order":"o-8","compartment":5,"old":"assigned","state":"ready","reason":"loaded","at":1800201660.0,"ready_id":"115aea3ecc835897","expires_at":1800460860.0}');
INSERT INTO "stream" VALUES(341,'command','{"id":"c-2e81b1b72cc72416","device":"lk-u1","name":"set_order","args":{"compartment":5,"order":"o-8","mac":"[redacted]","exp":1800460860000,"salt_id":"02b990bd","key_id":"70c69129"},"idem_key":"[redacted]","status":"queued","reason":null,"result":null,"deadline":1800288060000,"created":1800201660000,"updated":1800201660000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(342,'locker','{"type":"order.code","device":"lk-u1","bank":"lk-u1","order":"o-8","compartment":5,"state":"ready","at":1800201660.0,"ready_id":"1213415f2864da9f","expires_at":1800460860.0}');
INSERT INTO "stream" VALUES(343,'command','{"id":"c-9b2b9ce9f0b1c4e7","device":"lk-u1","name":"set_order","args":{"compartment":5,"order":"o-8","mac":"[redacted]","exp":1800460860000,"salt_id":"02b990bd","key_id":"70c69129"},"idem_key":"[redacted]","status":"queued","reason":null,"result":null,"deadline":1800288060000,"created":1800201660000,"updated":1800201660000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(344,'event','{"id":154,"device":"lk-u1","epoch":"e1","seq":25,"type":"door.opened","t_device":1800203460000,"t_gateway":1800203460000,"body":{"compartment":5,"why":"pickup","order":"o-8"}}');
INSERT INTO "stream" VALUES(345,'event','{"id":155,"device":"lk-u1","epoch":"e1","seq":26,"type":"pickup.collected","t_device":1800203460000,"t_gateway":1800203460000,"body":{"compartment":5,"order":"o-8"}}');
INSERT INTO "stream" VALUES(346,'locker','{"type":"order.collected","device":"lk-u1","bank":"lk-u1","order":"o-8","compartment":5,"old":"ready","state":"collected","reason":"collected","at":1800203460.0}');
INSERT INTO "stream" VALUES(347,'locker','{"type":"order.assigned","device":"lk-u1","bank":"lk-u1","order":"o-9","compartment":11,"old":null,"state":"assigned","reason":"assigned","at":1800203460.0}');
INSERT INTO "stream" VALUES(348,'event','{"id":156,"device":"lk-u1","epoch":"e1","seq":27,"type":"door.opened","t_device":1800203460000,"t_gateway":1800203460000,"body":{"compartment":11,"why":"load","order":null}}');
INSERT INTO "stream" VALUES(349,'event','{"id":157,"device":"lk-u1","epoch":"e1","seq":28,"type":"door.closed","t_device":1800203460000,"t_gateway":1800203460000,"body":{"compartment":11,"why":"load","open_ms":900,"occupied":1}}');
INSERT INTO "stream" VALUES(350,'event','{"id":158,"device":"lk-u1","epoch":"e1","seq":29,"type":"order.loaded","t_device":1800203460000,"t_gateway":1800203460000,"body":{"compartment":11,"occupied":1}}');
INSERT INTO "stream" VALUES(351,'locker','{"type":"order.ready","device":"lk-u1","bank":"lk-u1","order":"o-9","compartment":11,"old":"assigned","state":"ready","reason":"loaded","at":1800203520.0,"ready_id":"512cb5928d8538a7","expires_at":1800462720.0}');
INSERT INTO "stream" VALUES(352,'command','{"id":"c-a7111e291a7b7d79","device":"lk-u1","name":"set_order","args":{"compartment":11,"order":"o-9","mac":"[redacted]","exp":1800462720000,"salt_id":"02b990bd","key_id":"70c69129"},"idem_key":"[redacted]","status":"queued","reason":null,"result":null,"deadline":1800289920000,"created":1800203520000,"updated":1800203520000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(353,'locker','{"type":"order.cancelled","device":"lk-u1","bank":"lk-u1","order":"o-7","compartment":1,"old":"assigned","state":"cancelled","reason":"reservation-expired","at":1800288000.0}');
INSERT INTO "stream" VALUES(354,'locker','{"type":"order.assigned","device":"lk-u1","bank":"lk-u1","order":"o-10","compartment":1,"old":null,"state":"assigned","reason":"assigned","at":1800288000.0}');
INSERT INTO "stream" VALUES(355,'locker','{"type":"order.cancelled","device":"lk-u1","bank":"lk-u1","order":"o-10","compartment":1,"old":"assigned","state":"cancelled","reason":"cancelled","at":1800288000.0}');
INSERT INTO "stream" VALUES(356,'locker','{"type":"order.assigned","device":"lk-u1","bank":"lk-u1","order":"o-11","compartment":5,"old":null,"state":"assigned","reason":"assigned","at":1800288000.0}');
INSERT INTO "stream" VALUES(357,'event','{"id":159,"device":"lk-u1","epoch":"e1","seq":30,"type":"door.opened","t_device":1800288000000,"t_gateway":1800288000000,"body":{"compartment":5,"why":"load","order":null}}');
INSERT INTO "stream" VALUES(358,'event','{"id":160,"device":"lk-u1","epoch":"e1","seq":31,"type":"door.closed","t_device":1800288000000,"t_gateway":1800288000000,"body":{"compartment":5,"why":"load","open_ms":900,"occupied":1}}');
INSERT INTO "stream" VALUES(359,'event','{"id":161,"device":"lk-u1","epoch":"e1","seq":32,"type":"order.loaded","t_device":1800288000000,"t_gateway":1800288000000,"body":{"compartment":5,"occupied":1}}');
INSERT INTO "stream" VALUES(360,'locker','{"type":"order.ready","device":"lk-u1","bank":"lk-u1","order":"o-11","compartment":5,"old":"assigned","state":"ready","reason":"loaded","at":1800288060.0,"ready_id":"3d18a98fecbf944e","expires_at":1800547260.0}');
INSERT INTO "stream" VALUES(361,'command','{"id":"c-34b00a7fde427a36","device":"lk-u1","name":"set_order","args":{"compartment":5,"order":"o-11","mac":"[redacted]","exp":1800547260000,"salt_id":"02b990bd","key_id":"70c69129"},"idem_key":"[redacted]","status":"queued","reason":null,"result":null,"deadline":1800374460000,"created":1800288060000,"updated":1800288060000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(362,'event','{"id":162,"device":"lk-u1","epoch":"e1","seq":33,"type":"door.opened","t_device":1800289860000,"t_gateway":1800289860000,"body":{"compartment":5,"why":"pickup","order":"o-11"}}');
INSERT INTO "stream" VALUES(363,'event','{"id":163,"device":"lk-u1","epoch":"e1","seq":34,"type":"pickup.collected","t_device":1800289860000,"t_gateway":1800289860000,"body":{"compartment":5,"order":"o-11"}}');
INSERT INTO "stream" VALUES(364,'locker','{"type":"order.collected","device":"lk-u1","bank":"lk-u1","order":"o-11","compartment":5,"old":"ready","state":"collected","reason":"collected","at":1800289860.0}');
INSERT INTO "stream" VALUES(365,'locker','{"type":"order.assigned","device":"lk-u1","bank":"lk-u1","order":"o-12","compartment":12,"old":null,"state":"assigned","reason":"assigned","at":1800289860.0}');
INSERT INTO "stream" VALUES(366,'event','{"id":164,"device":"lk-u1","epoch":"e1","seq":35,"type":"door.opened","t_device":1800289860000,"t_gateway":1800289860000,"body":{"compartment":12,"why":"load","order":null}}');
INSERT INTO "stream" VALUES(367,'event','{"id":165,"device":"lk-u1","epoch":"e1","seq":36,"type":"door.closed","t_device":1800289860000,"t_gateway":1800289860000,"body":{"compartment":12,"why":"load","open_ms":900,"occupied":1}}');
INSERT INTO "stream" VALUES(368,'event','{"id":166,"device":"lk-u1","epoch":"e1","seq":37,"type":"order.loaded","t_device":1800289860000,"t_gateway":1800289860000,"body":{"compartment":12,"occupied":1}}');
INSERT INTO "stream" VALUES(369,'locker','{"type":"order.ready","device":"lk-u1","bank":"lk-u1","order":"o-12","compartment":12,"old":"assigned","state":"ready","reason":"loaded","at":1800289920.0,"ready_id":"c5a156aa6c91ea5a","expires_at":1800549120.0}');
INSERT INTO "stream" VALUES(370,'command','{"id":"c-e94fcb62b2486bc4","device":"lk-u1","name":"set_order","args":{"compartment":12,"order":"o-12","mac":"[redacted]","exp":1800549120000,"salt_id":"02b990bd","key_id":"70c69129"},"idem_key":"[redacted]","status":"queued","reason":null,"result":null,"deadline":1800376320000,"created":1800289920000,"updated":1800289920000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(371,'locker','{"type":"order.code","device":"lk-u1","bank":"lk-u1","order":"o-12","compartment":12,"state":"ready","at":1800289920.0,"ready_id":"d368d2bf78e252c4","expires_at":1800549120.0}');
INSERT INTO "stream" VALUES(372,'command','{"id":"c-9b2e2e1c316cca40","device":"lk-u1","name":"set_order","args":{"compartment":12,"order":"o-12","mac":"[redacted]","exp":1800549120000,"salt_id":"02b990bd","key_id":"70c69129"},"idem_key":"[redacted]","status":"queued","reason":null,"result":null,"deadline":1800376320000,"created":1800289920000,"updated":1800289920000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
INSERT INTO "stream" VALUES(373,'locker','{"type":"order.expired","device":"lk-u1","bank":"lk-u1","order":"o-3","compartment":9,"old":"ready","state":"expired","reason":"pickup-window-passed","at":1800295200.0}');
INSERT INTO "stream" VALUES(374,'command','{"id":"c-d5ae253dd92cda5d","device":"lk-u1","name":"revoke","args":{"compartment":9,"order":"o-3"},"idem_key":"lk:o-3:revoke","status":"queued","reason":null,"result":null,"deadline":1800381600000,"created":1800295200000,"updated":1800295200000,"late":false,"sends":0,"last_sent":null,"late_outcome":null,"final":false}');
CREATE TABLE tube_jobs (
        id      TEXT PRIMARY KEY,
        data    TEXT NOT NULL,             -- JSON: the public dispatch record
        updated INTEGER NOT NULL);
CREATE TABLE tube_state (
        network TEXT PRIMARY KEY,
        state   TEXT NOT NULL,             -- JSON: {"arbiter": to_dict(), "meta": {...}}
        cursor  INTEGER NOT NULL,          -- events.id of the last tube event applied
        updated INTEGER NOT NULL);
CREATE TABLE webhook_deliveries (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        sub         TEXT NOT NULL REFERENCES webhook_subscriptions(id) ON DELETE CASCADE,
        stream_id   INTEGER NOT NULL,
        type        TEXT NOT NULL,
        data        TEXT NOT NULL,                 -- JSON, as committed with the event
        created     INTEGER NOT NULL,
        status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered')),
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_at     INTEGER NOT NULL,
        last_attempt INTEGER,
        last_code   INTEGER,
        last_error  TEXT,
        delivered_at INTEGER
    );
CREATE TABLE webhook_subscriptions (
        id          TEXT PRIMARY KEY,
        url         TEXT NOT NULL,
        secret      TEXT NOT NULL,
        events      TEXT NOT NULL,                 -- JSON list of patterns
        description TEXT,
        created     INTEGER NOT NULL,
        delivered   INTEGER NOT NULL DEFAULT 0,    -- deliveries answered 2xx
        failures    INTEGER NOT NULL DEFAULT 0,    -- failed attempts, all time
        failing     INTEGER NOT NULL DEFAULT 0,    -- failed attempts since the last success
        last_attempt INTEGER,
        last_success INTEGER,
        last_error  TEXT
    , include_secrets INTEGER NOT NULL DEFAULT 0);
CREATE INDEX events_by_type ON events (type, id);
CREATE INDEX events_by_device ON events (device, id);
CREATE INDEX commands_pending ON commands (status) WHERE status IN ('queued','sent','accepted');
CREATE INDEX alerts_by_key ON alerts (key, state);
CREATE INDEX webhook_pending ON webhook_deliveries (sub, id)
        WHERE status = 'pending';
CREATE INDEX purchases_by_at ON purchases (at);
CREATE INDEX an_tube_delivered ON an_tube (delivered) WHERE delivered IS NOT NULL;
CREATE INDEX an_locker_collected ON an_locker (collected) WHERE collected IS NOT NULL;
CREATE TRIGGER command_counts_insert AFTER INSERT ON commands BEGIN
        INSERT INTO command_counts (status, n) VALUES (NEW.status, 1)
            ON CONFLICT (status) DO UPDATE SET n = n + 1;
    END;
CREATE TRIGGER command_counts_update AFTER UPDATE OF status ON commands
        WHEN NEW.status IS NOT OLD.status BEGIN
        UPDATE command_counts SET n = n - 1 WHERE status = OLD.status;
        INSERT INTO command_counts (status, n) VALUES (NEW.status, 1)
            ON CONFLICT (status) DO UPDATE SET n = n + 1;
    END;
CREATE TRIGGER command_counts_delete AFTER DELETE ON commands BEGIN
        UPDATE command_counts SET n = n - 1 WHERE status = OLD.status;
    END;
CREATE UNIQUE INDEX fw_rollouts_one_running ON fw_rollouts (status) WHERE status = 'running';
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('events',166);
INSERT INTO "sqlite_sequence" VALUES('stream',374);
COMMIT;
PRAGMA user_version = 17;
