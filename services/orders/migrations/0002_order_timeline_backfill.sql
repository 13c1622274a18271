UPDATE order_views SET
    reserved_at = (SELECT MIN(recorded_at) FROM events
                   WHERE stream_id = order_views.order_id AND event_type = 'StockReserved'),
    paid_at = (SELECT MIN(recorded_at) FROM events
               WHERE stream_id = order_views.order_id AND event_type = 'PaymentCaptured'),
    confirmed_at = (SELECT MIN(recorded_at) FROM events
                    WHERE stream_id = order_views.order_id AND event_type = 'OrderConfirmed'),
    cancelled_at = (SELECT MIN(recorded_at) FROM events
                    WHERE stream_id = order_views.order_id AND event_type = 'OrderCancelled');
